"""Runs app.py for real and checks that it starts the trace the worker continues.

    python smoke_test.py     # in a venv with requirements.txt; Redis and RabbitMQ on loopback

Starts a local OTLP/HTTP receiver (requests decoded with the official opentelemetry-proto
messages), runs the app under uvicorn once per RQ_TRACE_INJECTION mode, POSTs a document,
and checks: the rq job's meta holds a traceparent of the HTTP request's trace, whose parent
span was exported (the PRODUCER span of the enqueue); the AMQP message published by
/documents/amqp carries a traceparent header of its request's trace. Its own queue names,
its keys removed at the end. Exit 1 on any failure.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pika
import redis
from rq.job import Job
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

HERE = os.path.dirname(os.path.abspath(__file__))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
SPANS = []  # (trace_id hex, span_id hex, parent hex, name, kind)
failures = []
passes = []


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    SPANS.append((s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(what, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    (passes if ok else failures).append(what)


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def wait_http(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited: {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("uvicorn did not answer")


def spans_of(trace_id, done, deadline=10):
    """The exported spans of trace_id once done(spans) holds (or whatever came by the deadline):
    the server span ends after the response, so it is exported last."""
    end = time.time() + deadline
    while True:
        found = [s for s in SPANS if s[0] == trace_id]
        if done(found) or time.time() > end:
            return found
        time.sleep(0.1)


def has_server(spans):
    return any(s[4] == 2 for s in spans)  # SPAN_KIND_SERVER


def run(mode, otlp_port, r, amqp_queue):
    queue = f"fastapi-smoke-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = dict(
        os.environ,
        REDIS_URL=REDIS_URL,
        AMQP_URL=AMQP_URL,
        PIPELINE_QUEUE=queue,
        AMQP_QUEUE=amqp_queue,
        RQ_TRACE_INJECTION=mode,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
        OTEL_SERVICE_NAME="fastapi-smoke",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    cmd = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=HERE, env=env)
    try:
        wait_http(port, proc)
        out = post(port, "/documents", {"bucket": "docs", "key": "a.pdf", "user_id": "u-1"})
        job = Job.fetch(out["job_id"], connection=r)
        meta = job.meta
        tp = meta.get("traceparent", "")
        check(f"[{mode}] job meta has a traceparent", tp.startswith("00-"), repr(meta))
        check(
            f"[{mode}] the job runs pipelines.process_document with the document",
            job.func_name == "pipelines.process_document" and job.kwargs.get("key") == "a.pdf",
            f"{job.func_name} {job.kwargs}",
        )
        if tp:
            _, trace_id, parent, _ = tp.split("-")
            found = spans_of(trace_id, lambda f: has_server(f) and any(s[1] == parent for s in f))
            server = [s for s in found if s[4] == 2]
            producer = [s for s in found if s[1] == parent]
            check(f"[{mode}] the HTTP server span is in the job's trace", bool(server), repr(found))
            check(
                f"[{mode}] the traceparent's span is an exported PRODUCER span of that trace",
                bool(producer) and producer[0][4] == 4,
                repr(found),
            )
        # RabbitMQ: the message carries the context in its headers.
        out = post(port, "/documents/amqp", {"bucket": "docs", "key": "b.pdf"})
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            method, props, body = conn.channel().basic_get(amqp_queue, auto_ack=True)
        finally:
            conn.close()
        headers = (props.headers or {}) if method else {}
        tp = headers.get("traceparent", "")
        check(f"[{mode}] the AMQP message has a traceparent header", tp.startswith("00-"), repr(headers))
        check(f"[{mode}] the AMQP body is the task envelope", method and json.loads(body)["id"] == out["task_id"])
        if tp:
            found = spans_of(tp.split("-")[1], has_server)
            check(f"[{mode}] the AMQP publish joined the HTTP request's trace", has_server(found), repr(found))
    finally:
        proc.terminate()
        proc.wait(10)
        for key in r.scan_iter(f"rq:*{queue}*"):
            r.delete(key)
        r.srem("rq:queues", f"rq:queue:{queue}")


def main():
    otlp_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", otlp_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    r = redis.Redis.from_url(REDIS_URL)
    amqp_queue = f"fastapi-smoke-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    conn.channel().queue_declare(amqp_queue, auto_delete=False)
    conn.close()
    job_ids = set()
    try:
        for mode in ("instrumentation", "explicit"):
            before = set(r.keys("rq:job:*"))
            run(mode, otlp_port, r, amqp_queue)
            job_ids |= set(r.keys("rq:job:*")) - before
    finally:
        for key in job_ids:
            r.delete(key)
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        conn.channel().queue_delete(amqp_queue)
        conn.close()
        server.shutdown()
    print(f"{len(passes)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
