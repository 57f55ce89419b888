"""The worker's trace context around a job's call, for the team's own OpenTelemetry code.

The worker sends the W3C headers (``traceparent``, ``tracestate``) of its span for the
attempt in the ``job`` message's ``trace`` field. When the ``opentelemetry`` package is
installed in this interpreter, the runner extracts a context from them with the global
propagator and attaches it while the function (and its callbacks) run, so spans the
function starts are children of the worker's span. Without the package nothing happens: it
is looked for once, on the first job that carries a context, and never again.
"""

_api = None  # (context module, propagate module), False when not installed, None: not tried


def _otel():
    global _api
    if _api is None:
        try:
            from opentelemetry import context, propagate
        except ImportError:
            _api = False
        else:
            _api = (context, propagate)
    return _api


def attach(headers):
    """Makes the context in ``headers`` current; a token for :func:`detach` (or None)."""
    if not headers:
        return None
    api = _otel()
    if not api:
        return None
    context, propagate = api
    try:
        return context.attach(propagate.extract(headers))
    except Exception:  # noqa: BLE001 - tracing must never fail a job
        return None


def detach(token):
    """Restores the context that was current before :func:`attach`."""
    if token is None:
        return
    api = _otel()
    if api:
        try:
            api[0].detach(token)
        except Exception:  # noqa: BLE001
            pass
