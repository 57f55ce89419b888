"""One runner process: reads jobs from the worker, runs them, answers with their outcome.

Threads: the reader (frames in), the main thread (plain functions, one at a time, as rq's
work horse runs them: signals and rq's signal-based callback timeouts work), an event loop
(``async def`` functions, several at once; the worker bounds how many) and a heartbeat.
"""

import asyncio
import importlib
import inspect
import os
import queue
import sys
import threading
import time
import traceback

import redis
import rq
from rq.job import Job
from rq.timeouts import JobTimeoutException

from . import compat, tracing
from .protocol import PROTOCOL_VERSION, read_frame

HEARTBEAT_SECS = 2.0


class ProcessDied(Exception):
    """Given to a failure callback when the job's process died (crash, kill, OOM)."""


def rss_bytes():
    """Resident set size of this process now (not the peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def exc_string(exc_info):
    """rq's ``exc_string``: the full formatted traceback."""
    return "".join(traceback.format_exception(*exc_info))


class Runner:
    """Serves one worker over ``proto_in`` / ``writer`` until ``exit`` or end of input."""

    def __init__(self, proto_in, writer, conn, serializer=None):
        self.proto_in = proto_in
        self.writer = writer
        # A ``redis.Redis`` (see ``connection.connect``); a URL string is accepted too.
        self.conn = redis.Redis.from_url(conn) if isinstance(conn, str) else conn
        self.serializer = serializer
        self.main_jobs = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.tasks = {}
        self.cancel_reasons = {}

    # ---- process lifecycle -------------------------------------------------------------
    def serve(self, async_slots):
        compat.install()
        threading.Thread(target=self.loop.run_forever, name="mindora-async", daemon=True).start()
        self.writer.send(
            {
                "t": "hello",
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "rq": rq.__version__,
                "async_slots": async_slots,
                "rss": rss_bytes(),
            }
        )
        threading.Thread(target=self._read, name="mindora-reader", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="mindora-heartbeat", daemon=True).start()
        while True:
            item = self.main_jobs.get()
            if item is None:
                return
            fn, args = item
            fn(*args)

    def _read(self):
        try:
            while True:
                frame = read_frame(self.proto_in)
                if frame is None:
                    break
                self._dispatch(*frame)
        except Exception:  # noqa: BLE001 - a broken pipe means the worker is gone
            traceback.print_exc()
        # The worker closed the pipe (it stopped or was killed): its jobs are recovered
        # from Redis by the fleet, so stop at once rather than finish them unobserved.
        os._exit(0)

    def _heartbeat(self):
        while True:
            time.sleep(HEARTBEAT_SECS)
            try:
                self.writer.send({"t": "hb", "rss": rss_bytes()})
            except OSError:
                os._exit(0)

    def _dispatch(self, header, _body):
        kind = header["t"]
        if kind == "job":
            self._accept(header)
        elif kind == "callback":
            self.main_jobs.put((self._late_callback, (header,)))
        elif kind == "cancel":
            self.loop.call_soon_threadsafe(self._cancel, header["tag"], header.get("reason", "stopped"))
        elif kind == "exit":
            self.main_jobs.put(None)

    # ---- jobs --------------------------------------------------------------------------
    def _load(self, job_id, serializer=None):
        raw = self.conn.hgetall(Job.key_for(job_id))
        if not raw:
            raise rq.exceptions.NoSuchJobError(f"No such job: {job_id}")
        ser = compat.serializer_for(raw.get(b"data"), serializer or self.serializer)
        job = Job(id=job_id, connection=self.conn, serializer=ser)
        job.restore(raw)
        return job

    def _accept(self, header):
        tag = header["tag"]
        job = None
        try:
            job = self._load(header["id"], header.get("serializer"))
            func = job.func  # imported by dotted name, as rq does (import_attribute)
            job.args, job.kwargs  # decode now: a bad payload fails here with its traceback
        except BaseException:  # noqa: BLE001 - reported as the job's failure
            if job is None:
                self._send_err(tag, None, sys.exc_info())
            else:  # as rq's perform_job: a job that cannot start still gets on_failure
                self.main_jobs.put((self._failed, (tag, job, sys.exc_info())))
            return
        trace = header.get("trace")
        if inspect.iscoroutinefunction(func):
            self.writer.send({"t": "started", "tag": tag, "mode": "async"})
            self.loop.call_soon_threadsafe(self._start_task, tag, job, header.get("timeout"), trace)
        else:
            self.writer.send({"t": "started", "tag": tag, "mode": "sync"})
            self.main_jobs.put((self._run_sync, (tag, job, trace)))

    def _run_sync(self, tag, job, trace=None):
        # The worker's span is current for the call and the callbacks, then the previous
        # context again, whatever the outcome (a timeout kills the process instead).
        token = tracing.attach(trace)
        try:
            self._call_sync(tag, job)
        finally:
            tracing.detach(token)

    def _call_sync(self, tag, job):
        try:
            with compat.current_job(job):
                result = job.func(*job.args, **job.kwargs)
                if asyncio.iscoroutine(result):  # a plain function returning a coroutine
                    result = asyncio.run(result)
        except BaseException:  # noqa: BLE001 - rq catches everything the job raises
            self._failed(tag, job, sys.exc_info())
            return
        self._succeeded(tag, job, result)

    def _start_task(self, tag, job, timeout, trace=None):
        self.tasks[tag] = self.loop.create_task(self._run_async(tag, job, timeout, trace))

    async def _run_async(self, tag, job, timeout, trace=None):
        # Attached inside the task: a task runs in its own copy of the context, so this
        # reaches the function and its callbacks and no other job on the loop.
        token = tracing.attach(trace)
        try:
            await self._call_async(tag, job, timeout)
        finally:
            tracing.detach(token)

    async def _call_async(self, tag, job, timeout):
        try:
            with compat.current_job(job):
                result = await job.func(*job.args, **job.kwargs)
        except asyncio.CancelledError:
            reason = self.cancel_reasons.pop(tag, "abandoned")
            if reason == "timeout":
                try:  # rq's text; no chained CancelledError, as rq's death penalty raises it
                    message = f"Task exceeded maximum timeout value ({timeout} seconds)"
                    raise compat.timeout_exception(message) from None
                except JobTimeoutException:
                    self._failed(tag, job, sys.exc_info())
            elif reason == "stopped":
                self._stopped(tag, job)
            else:  # the worker gave up on it (shutdown): no callback, rq requeues it
                self.writer.send({"t": "err", "tag": tag, "exc_type": "Abandoned", "rss": rss_bytes()}, b"abandoned")
            return
        except BaseException:  # noqa: BLE001
            self._failed(tag, job, sys.exc_info())
            return
        finally:
            self.tasks.pop(tag, None)
        self._succeeded(tag, job, result)

    def _cancel(self, tag, reason):
        task = self.tasks.get(tag)
        if task is not None:
            self.cancel_reasons[tag] = reason
            task.cancel()

    # ---- outcomes ----------------------------------------------------------------------
    def _succeeded(self, tag, job, result):
        try:
            job._result = result
            body = job.serializer.dumps(result)
            if compat.has_callback("success", job):
                self._phase(tag, "success", job)
                compat.run_callback("success", job, result)
        except BaseException:  # noqa: BLE001 - unserializable result or failing callback
            self._failed(tag, job, sys.exc_info())
            return
        self.writer.send({"t": "ok", "tag": tag, "rss": rss_bytes()}, body)

    def _failed(self, tag, job, exc_info):
        if compat.has_callback("failure", job):
            self._phase(tag, "failure", job)
            try:
                compat.run_callback("failure", job, *exc_info)
            except BaseException:  # noqa: BLE001 - as rq: a failing callback replaces the error
                exc_info = sys.exc_info()
        self._send_err(tag, job, exc_info)

    def _stopped(self, tag, job):
        try:
            if compat.has_callback("stopped", job):
                compat.run_callback("stopped", job)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        self.writer.send({"t": "err", "tag": tag, "exc_type": "StopRequested", "rss": rss_bytes()}, b"job stopped by request")

    def _send_err(self, tag, job, exc_info):
        exc_type = exc_info[0].__name__ if exc_info[0] else "Exception"
        self.writer.send(
            {"t": "err", "tag": tag, "exc_type": exc_type, "rss": rss_bytes()},
            exc_string(exc_info).encode("utf-8", "replace"),
        )

    def _phase(self, tag, kind, job):
        self.writer.send({"t": "phase", "tag": tag, "phase": kind, "timeout": compat.callback_timeout(kind, job)})

    def _late_callback(self, header):
        """A callback for a job whose own process was killed (timeout, crash, stop)."""
        tag = header["tag"]
        try:
            job = self._load(header["id"], header.get("serializer"))
            if header["kind"] == "stopped":
                # The worker dropped the job: a stop command (rq records "stopped") or a
                # shutdown (it goes back to its queue). Only the former gets the callback.
                want = header.get("if_status")
                deadline = time.time() + 10
                while want and job.get_status(refresh=True) != want:
                    if job.get_status() != "started" or time.time() > deadline:
                        self.writer.send({"t": "ok", "tag": tag, "rss": rss_bytes()})
                        return
                    time.sleep(0.05)
                compat.run_callback("stopped", job)
            else:
                message = header.get("message", "")
                if header.get("exc_type") == "JobTimeoutException":
                    exc, exc_class = compat.timeout_exception(message), JobTimeoutException
                else:
                    exc, exc_class = ProcessDied(message), ProcessDied
                try:
                    raise exc
                except exc_class:
                    compat.run_callback("failure", job, *sys.exc_info())
        except BaseException:  # noqa: BLE001
            self._send_err(tag, None, sys.exc_info())
            return
        self.writer.send({"t": "ok", "tag": tag, "rss": rss_bytes()})


def preload(modules):
    """Imports the app's modules before saying hello, so the first job pays no import."""
    for name in filter(None, (m.strip() for m in modules.split(","))):
        importlib.import_module(name)
