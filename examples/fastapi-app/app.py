"""Example producer for mindora: a FastAPI app that hands documents to the worker, through
rq (Redis) or RabbitMQ, and starts the trace the worker continues (issue 21).

    POST /documents       {"bucket": ..., "key": ..., "app"?, "user_id"?, "document_id"?, "options"?}
                          -> enqueues rq job `pipelines.process_document` on PIPELINE_QUEUE
    POST /documents/amqp  same body -> publishes the task to RabbitMQ AMQP_QUEUE (pika)
    GET  /documents/{job_id}  the rq job's status, meta and result
    GET  /healthz

Tracing is configured only by the standard OpenTelemetry variables: it is on when
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set and
OTEL_SDK_DISABLED is not "true"; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG are read by the SDK itself. Spans go out over
OTLP HTTP/protobuf. The trace context reaches the worker in the rq job's `meta`
(`traceparent` / `tracestate`) and in the AMQP message headers.

RQ_TRACE_INJECTION picks how the context gets into `job.meta`:
  "instrumentation" (default): opentelemetry-instrumentation-rq patches Queue._enqueue_job,
                               so every enqueue carries it (and gets a PRODUCER span);
  "explicit":                  no rq instrumentation; `enqueue_traced` below writes it.
"""

import datetime
import json
import os
import uuid

import pika
import redis
from fastapi import FastAPI, HTTPException
from opentelemetry import propagate, trace
from pydantic import BaseModel, Field
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PIPELINE_QUEUE = os.environ.get("PIPELINE_QUEUE", "ai_processing_tasks")
AMQP_QUEUE = os.environ.get("AMQP_QUEUE", "ai_processing_tasks")
DEFAULT_APP = os.environ.get("PIPELINE_APP", "demo")
INJECTION = os.environ.get("RQ_TRACE_INJECTION", "instrumentation")

tracer = trace.get_tracer("mindora.examples.fastapi")


def tracing_wanted():
    """The standard switches: an OTLP endpoint set, the SDK not disabled, an exporter."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def setup_tracing():
    """SDK + OTLP/HTTP exporter from the environment; False (and nothing installed) when off."""
    if not tracing_wanted():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.pika import PikaInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # TracerProvider() reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and the sampler
    # variables; the exporter reads the endpoint (adding /v1/traces to the base endpoint).
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if INJECTION == "instrumentation":
        from opentelemetry_instrumentation_rq import RQInstrumentor

        RQInstrumentor().instrument()
    # pika: a PRODUCER span per basic_publish and the context in the message headers.
    PikaInstrumentor().instrument()
    return True


TRACING = setup_tracing()
app = FastAPI(title="mindora example producer")
if TRACING:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz")

_redis = redis.Redis.from_url(REDIS_URL)
_queue = Queue(PIPELINE_QUEUE, connection=_redis)


class Document(BaseModel):
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    app: str = Field(default=DEFAULT_APP, pattern=r"^[a-z][a-z0-9_-]{0,47}$")
    user_id: str | None = None
    document_id: str | None = None
    options: dict = Field(default_factory=dict)

    def kwargs(self):
        return self.model_dump()


def enqueue_traced(queue, func, **kwargs):
    """The explicit way (no rq instrumentation): the current context into the job's meta.

    rq has no hook for this, so the job is created first, the W3C headers written into its
    meta, then enqueued; the worker reads `traceparent` / `tracestate` from meta."""
    with tracer.start_as_current_span(f"send {queue.name}", kind=trace.SpanKind.PRODUCER) as span:
        job = queue.create_job(func, kwargs=kwargs)
        propagate.inject(job.meta)  # {"traceparent": "00-...", "tracestate": ...} or nothing
        span.set_attribute("messaging.system", "rq")
        span.set_attribute("messaging.destination.name", queue.name)
        span.set_attribute("messaging.message.id", job.id)
        return queue.enqueue_job(job)


@app.get("/healthz")
def healthz():
    return {"ok": True, "tracing": TRACING}


@app.post("/documents", status_code=202)
def create_document(doc: Document):
    if INJECTION == "explicit":
        job = enqueue_traced(_queue, "pipelines.process_document", **doc.kwargs())
    else:  # opentelemetry-instrumentation-rq (when tracing is on) writes meta on enqueue
        job = _queue.enqueue("pipelines.process_document", kwargs=doc.kwargs())
    return {"job_id": job.id, "queue": PIPELINE_QUEUE, "traceparent": job.meta.get("traceparent")}


@app.post("/documents/amqp", status_code=202)
def create_document_amqp(doc: Document):
    task_id = str(uuid.uuid4())
    envelope = {
        "id": task_id,
        "function": "pipelines.process_document",
        "kwargs": doc.kwargs(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    # One connection per request keeps the example short; a real app keeps one per process.
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        # With PikaInstrumentor on, basic_publish runs in a PRODUCER span and adds
        # traceparent / tracestate to the headers below.
        ch.basic_publish(
            exchange="",
            routing_key=AMQP_QUEUE,
            body=json.dumps(envelope).encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=task_id,
                type="mindora.task",
                headers={},
            ),
            mandatory=True,
        )
    finally:
        conn.close()
    return {"task_id": task_id, "queue": AMQP_QUEUE}


@app.get("/documents/{job_id}")
def document_status(job_id: str):
    try:
        job = Job.fetch(job_id, connection=_redis)
    except NoSuchJobError:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"job_id": job.id, "status": job.get_status(), "meta": job.meta, "result": job.return_value()}
