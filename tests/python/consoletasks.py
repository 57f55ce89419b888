"""Jobs for the console's browser tests (console/tests/browser.rs)."""

import os

import redis


def flaky(n):
    """Fails while the key `console-test:fail` exists, so a requeue after clearing it works."""
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    if r.exists("console-test:fail"):
        raise RuntimeError(f"upstream unavailable for item {n}")
    return n * 2
