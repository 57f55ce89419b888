"""``python -m mindora_runner``: started by mindora-worker, one process per pool slot.

Environment: ``MINDORA_REDIS_URL`` (the worker's Redis, for ``Job`` and ``meta``) and the
other ``MINDORA_REDIS_*`` settings of the worker (TLS files, ACL user, Sentinel; see
``connection``),
``MINDORA_PYTHON_ASYNC_SLOTS`` (``async def`` jobs at once), ``MINDORA_PYTHON_SERIALIZER``
(dotted path of a custom rq serializer), ``MINDORA_PYTHON_PRELOAD`` (modules to import at
start). The protocol runs on the original stdin/stdout; the job's own prints go to stderr.
"""

import os
import signal
import sys

from .connection import connect
from .protocol import Writer
from .runner import Runner, preload


def main():
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # anything the jobs print goes to stderr, never into the protocol
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    # Ctrl-C in the worker's terminal reaches us too; the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preload(os.environ.get("MINDORA_PYTHON_PRELOAD", ""))
    runner = Runner(
        proto_in,
        Writer(proto_out),
        connect(),
        os.environ.get("MINDORA_PYTHON_SERIALIZER") or None,
    )
    runner.serve(int(os.environ.get("MINDORA_PYTHON_ASYNC_SLOTS", "8")))
    proto_out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
