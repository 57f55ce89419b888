//! The trace context of the running code, for what it sends: a job's `meta`, an AMQP
//! message's headers, an HTTP request's headers.
//!
//! The context is the current `tracing` span's OpenTelemetry context, through the process's
//! global propagator. A process that never installed OpenTelemetry (tracing off) has the
//! no-op propagator, so every carrier is empty and nothing is written: no cost, no keys.

use opentelemetry::propagation::Injector;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use crate::wire::trace::Carrier;

/// The current span's context as W3C headers (empty when tracing is off or the span is not
/// part of a sampled-or-recorded trace).
pub fn current() -> Carrier {
    let mut carrier = Carrier::new();
    inject_current(&mut carrier);
    carrier
}

/// Injects the current span's context into any header map (`reqwest`/`http` headers, an
/// AMQP field table adapter, a plain map).
pub fn inject_current(into: &mut dyn Injector) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, into));
}
