"""What differs between rq 2.x and 3.x, in one place: how ``get_current_job()`` finds the
running job, and where the callback helpers live."""

import contextlib
import contextvars
import threading
import zlib

import rq.job
from rq.serializers import JSONSerializer, resolve_serializer
from rq.timeouts import JobTimeoutException, TimerDeathPenalty, UnixSignalDeathPenalty

try:  # rq >= 3.0
    from rq import callbacks as _rq_callbacks
except ImportError:  # rq 2.x: the helpers are Job methods
    _rq_callbacks = None


class _ContextStack:
    """rq 2.x's ``_job_stack`` keyed by thread; this one is keyed by context, so several
    ``async def`` jobs on one event loop each see their own job."""

    def __init__(self):
        self._var = contextvars.ContextVar("mindora_job_stack", default=())

    def push(self, obj):
        self._var.set(self._var.get() + (obj,))

    def pop(self):
        stack = self._var.get()
        if not stack:
            return None
        self._var.set(stack[:-1])
        return stack[-1]

    @property
    def top(self):
        stack = self._var.get()
        return stack[-1] if stack else None


def install():
    """Makes rq 2.x's ``get_current_job()`` context-aware (rq 3.x already is)."""
    if not hasattr(rq.job, "_current_job") and hasattr(rq.job, "_job_stack"):
        rq.job._job_stack = _ContextStack()


@contextlib.contextmanager
def current_job(job):
    """``rq.get_current_job()`` returns ``job`` inside this block (as ``Job.perform`` does)."""
    if hasattr(rq.job, "_current_job"):
        token = rq.job._current_job.set(job)
        try:
            yield
        finally:
            rq.job._current_job.reset(token)
    else:
        rq.job._job_stack.push(job)
        try:
            yield
        finally:
            rq.job._job_stack.pop()


def death_penalty():
    """rq's signal-based timeout in the main thread, its timer-based one elsewhere."""
    if threading.current_thread() is threading.main_thread():
        return UnixSignalDeathPenalty
    return TimerDeathPenalty


def timeout_exception(message):
    """rq's ``JobTimeoutException`` carrying ``message``. rq's ``TimerDeathPenalty`` (used
    for callbacks outside the main thread) replaces the class's ``__init__`` process-wide,
    so every later instance would read "(60 seconds)" (the last callback timeout); this
    instance is made without it."""
    exc = JobTimeoutException.__new__(JobTimeoutException)
    Exception.__init__(exc, message)
    return exc


def run_callback(kind, job, *args):
    """Runs the job's ``on_<kind>`` callback exactly as rq's worker does (same helper)."""
    if _rq_callbacks is not None:
        getattr(_rq_callbacks, f"execute_{kind}_callback")(job, death_penalty(), *args)
    else:
        getattr(job, f"execute_{kind}_callback")(death_penalty(), *args)


def has_callback(kind, job):
    """Whether the job carries an ``on_<kind>`` callback."""
    return getattr(job, f"_{kind}_callback_name", None) is not None


def callback_timeout(kind, job):
    """The callback's timeout in seconds (rq's default when unset)."""
    try:
        return int(getattr(job, f"{kind}_callback_timeout"))
    except Exception:  # noqa: BLE001 - a malformed timeout falls back to rq's default
        return 60


def serializer_for(data, configured=None):
    """The job's serializer: a configured dotted path wins; otherwise told from the bytes
    (pickle starts with PROTO 0x80, rq's JSON payload with '[')."""
    if configured:
        return resolve_serializer(configured)
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        raw = data or b""
    first = raw.lstrip()[:1]
    if first and first != b"\x80":
        return resolve_serializer(JSONSerializer)
    return resolve_serializer(None)
