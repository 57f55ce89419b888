"""A team's tasks, unchanged from what `rq worker` ran: mindora-worker --python runs them."""

import asyncio

from rq import get_current_job


def sync_orders(customer_id):
    job = get_current_job()
    job.meta["progress"] = "fetched"
    job.save_meta()
    return {"customer": customer_id, "synced": True}


async def fetch_rates(currency):
    await asyncio.sleep(0.1)  # an HTTP call, in a real app
    return {"currency": currency, "rate": 1.0}
