"""Plain Python task functions run by mindora-worker's --python pool in the tests and the
benchmark: nothing here knows about mindora."""

import asyncio
import ctypes
import os
import time
from dataclasses import dataclass

from rq import get_current_job

_hoard = []


@dataclass
class Point:
    x: int
    y: int


def move(point, dx=0, dy=0):
    """A pickled custom object in, another out."""
    return Point(point.x + dx, point.y + dy)


def add(x, y=1):
    return {"sum": x + y}


def boom(message):
    raise ValueError(message)


def progress(steps):
    job = get_current_job()
    for i in range(steps):
        job.meta["step"] = i + 1
        job.save_meta()
    return {"id": job.id, "origin": job.origin}


def stuck():
    time.sleep(3600)


def segfault():
    ctypes.string_at(0)


def sleepy(secs):
    """A plain function holding its process for `secs`."""
    time.sleep(secs)
    return secs


def pid():
    return os.getpid()


def grow(mb):
    """Keeps `mb` MiB alive in this process, to trip memory-based recycling."""
    _hoard.append(bytearray(mb * 1024 * 1024))
    return os.getpid()


async def nap(secs):
    await asyncio.sleep(secs)
    job = get_current_job()
    return {"id": job.id, "pid": os.getpid()}


def noop():
    return None


def io20():
    time.sleep(0.02)


async def io20_async():
    await asyncio.sleep(0.02)


def on_success(job, connection, result, *args, **kwargs):
    connection.set(f"cb:success:{job.id}", repr(result))


def on_failure(job, connection, typ, value, tb):
    connection.set(f"cb:failure:{job.id}", f"{typ.__name__}: {value}")


def on_stopped(job, connection):
    connection.set(f"cb:stopped:{job.id}", "stopped")


_arrived = 0


async def rendezvous(n):
    """Finishes only when `n` of these run at once in this process (or fails after 10 s)."""
    global _arrived
    _arrived += 1
    for _ in range(1000):
        if _arrived >= n:
            return os.getpid()
        await asyncio.sleep(0.01)
    raise RuntimeError(f"only {_arrived} of {n} ran at once")
