"""Task functions that report the OpenTelemetry context they run in (issue 21): the runner
makes the worker's span current, so these see its trace id and span id. In a venv without
OpenTelemetry they still run and say so."""

import asyncio

_provider = None


def _ids():
    try:
        from opentelemetry import trace
    except ImportError:
        return {"otel": False}
    ctx = trace.get_current_span().get_span_context()
    return {
        "otel": True,
        "valid": ctx.is_valid,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "sampled": ctx.trace_flags.sampled,
    }


def span_ids():
    return _ids()


async def span_ids_async():
    await asyncio.sleep(0)
    return _ids()


def span_ids_then_fail():
    raise ValueError(repr(_ids()))


async def span_ids_async_then_sleep(secs):
    await asyncio.sleep(secs)
    return _ids()


def child_span():
    """What the team's own instrumentation does: a span of its own, with the SDK."""
    global _provider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _provider is None:
        exporter = InMemorySpanExporter()
        _provider = TracerProvider()
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
        _provider.exporter = exporter
    with _provider.get_tracer("tracetasks").start_as_current_span("team work"):
        pass
    span = _provider.exporter.get_finished_spans()[-1]
    return {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "parent_remote": bool(span.parent and span.parent.is_remote),
    }
