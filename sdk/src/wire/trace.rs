//! Trace context in a job: where producers put it and how to read it as W3C Trace Context.
//!
//! rq has no field for it (rq issue #1999), so the field has settled on `job.meta`:
//! - the W3C keys `traceparent` / `tracestate` at the top of `meta`
//!   (`opentelemetry-instrumentation-rq`, and what [`crate::Client`] writes);
//! - Sentry's `meta["_sentry_trace_headers"]["sentry-trace"]` (`<trace>-<span>-<sampled>`);
//! - Datadog's `x-datadog-trace-id` / `x-datadog-parent-id` (decimal, low 64 bits) with the
//!   high 64 bits in `x-datadog-tags` as `_dd.p.tid`, and `x-datadog-sampling-priority`.
//!
//! AMQP messages carry the W3C keys as message headers (pika's instrumentation, Celery).
//! Everything here is pure: a producer's keys in, a W3C carrier out.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// W3C `traceparent` (meta key and AMQP header).
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate` (meta key and AMQP header).
pub const TRACESTATE: &str = "tracestate";
/// Sentry's rq integration: an object of HTTP-style trace headers in `meta`.
pub const SENTRY_HEADERS: &str = "_sentry_trace_headers";
/// Sentry's trace header inside [`SENTRY_HEADERS`].
pub const SENTRY_TRACE: &str = "sentry-trace";
/// Datadog: low 64 bits of the trace id, decimal.
pub const DATADOG_TRACE_ID: &str = "x-datadog-trace-id";
/// Datadog: the producer's span id, decimal.
pub const DATADOG_PARENT_ID: &str = "x-datadog-parent-id";
/// Datadog: sampling priority (> 0 is sampled).
pub const DATADOG_SAMPLING: &str = "x-datadog-sampling-priority";
/// Datadog: propagated tags; `_dd.p.tid` holds the high 64 bits of the trace id in hex.
pub const DATADOG_TAGS: &str = "x-datadog-tags";

/// A W3C Trace Context carrier (`traceparent`, and `tracestate` when present).
pub type Carrier = HashMap<String, String>;

/// The trace context a job's `meta` carries, as W3C headers; empty when it carries none.
/// W3C keys win over Sentry's, Sentry's over Datadog's (Datadog's own tracer writes the W3C
/// keys too by default).
pub fn carrier_from_meta(meta: &Map<String, Value>) -> Carrier {
    let text = |key: &str| meta.get(key).and_then(as_text);
    let mut carrier = w3c_carrier(text(TRACEPARENT), text(TRACESTATE));
    if !carrier.is_empty() {
        return carrier;
    }
    let sentry = meta
        .get(SENTRY_HEADERS)
        .and_then(|h| h.get(SENTRY_TRACE))
        .and_then(as_text)
        .and_then(|h| from_sentry(&h));
    let parent = sentry.or_else(|| {
        from_datadog(
            &text(DATADOG_TRACE_ID)?,
            &text(DATADOG_PARENT_ID)?,
            text(DATADOG_SAMPLING).as_deref(),
            text(DATADOG_TAGS).as_deref(),
        )
    });
    if let Some(parent) = parent {
        carrier.insert(TRACEPARENT.into(), parent);
    }
    carrier
}

/// A carrier from W3C `traceparent` / `tracestate` values wherever they were read (`meta`,
/// AMQP headers): empty unless the `traceparent` is well-formed.
pub fn w3c_carrier(traceparent: Option<String>, tracestate: Option<String>) -> Carrier {
    let mut carrier = Carrier::new();
    if let Some(parent) = traceparent.filter(|p| valid_traceparent(p)) {
        carrier.insert(TRACEPARENT.into(), parent);
        if let Some(state) = tracestate {
            carrier.insert(TRACESTATE.into(), state);
        }
    }
    carrier
}

/// Writes `carrier` into `meta` unless the producer already put a context there (a job
/// keeps the context of the request that created it).
pub fn inject_into_meta(meta: &mut Map<String, Value>, carrier: &Carrier) {
    if meta.contains_key(TRACEPARENT) {
        return;
    }
    for (key, value) in carrier {
        if key == TRACEPARENT || key == TRACESTATE {
            meta.insert(key.clone(), Value::String(value.clone()));
        }
    }
}

/// A `traceparent` (version 00 shape, non-zero ids, lowercase hex).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    matches!(parts.as_slice(), [v, t, s, f]
        if hex(v, 2) && *v != "ff" && hex(t, 32) && hex(s, 16) && hex(f, 2)
            && !zeros(t) && !zeros(s))
}

/// Sentry's `<32 hex trace>-<16 hex span>[-<0|1>]` as a `traceparent`.
fn from_sentry(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = parts.next().is_none_or(|s| s == "1");
    let parent = format!("00-{trace}-{span}-{:02x}", u8::from(sampled));
    valid_traceparent(&parent).then_some(parent)
}

/// Datadog's decimal ids (and `_dd.p.tid`) as a `traceparent`.
fn from_datadog(
    trace: &str,
    parent: &str,
    sampling: Option<&str>,
    tags: Option<&str>,
) -> Option<String> {
    let low: u64 = trace.trim().parse().ok()?;
    let span: u64 = parent.trim().parse().ok()?;
    let high = tags
        .into_iter()
        .flat_map(|t| t.split(','))
        .find_map(|kv| kv.trim().strip_prefix("_dd.p.tid="))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let sampled = sampling
        .and_then(|s| s.trim().parse::<i64>().ok())
        .is_none_or(|p| p > 0);
    let parent = format!(
        "00-{high:016x}{low:016x}-{span:016x}-{:02x}",
        u8::from(sampled)
    );
    valid_traceparent(&parent).then_some(parent)
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn zeros(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_keys_are_read_as_they_are() {
        let c = carrier_from_meta(&meta(json!({"traceparent": TP, "tracestate": "a=1"})));
        assert_eq!(c.get(TRACEPARENT).map(String::as_str), Some(TP));
        assert_eq!(c.get(TRACESTATE).map(String::as_str), Some("a=1"));
    }

    #[test]
    fn a_malformed_traceparent_is_no_context() {
        for bad in [
            "junk",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(carrier_from_meta(&meta(json!({ "traceparent": bad }))).is_empty());
        }
        assert!(carrier_from_meta(&meta(json!({"traceparent": 5}))).is_empty());
    }

    #[test]
    fn sentry_headers_become_a_traceparent() {
        let c = carrier_from_meta(&meta(json!({"_sentry_trace_headers": {
            "sentry-trace": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "baggage": "sentry-trace_id=4bf9"}})));
        assert_eq!(
            c.get(TRACEPARENT).map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
    }

    #[test]
    fn datadog_ids_become_a_traceparent_with_the_high_bits() {
        let c = carrier_from_meta(&meta(json!({
            "x-datadog-trace-id": "11803532876627986230",
            "x-datadog-parent-id": "67667974448284343",
            "x-datadog-sampling-priority": "1",
            "x-datadog-tags": "_dd.p.dm=-0,_dd.p.tid=640cfd8d00000000"})));
        assert_eq!(
            c.get(TRACEPARENT).map(String::as_str),
            Some("00-640cfd8d00000000a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let dropped = carrier_from_meta(&meta(json!({
            "x-datadog-trace-id": 11803532876627986230u64,
            "x-datadog-parent-id": 67667974448284343u64,
            "x-datadog-sampling-priority": -1})));
        assert_eq!(
            dropped.get(TRACEPARENT).map(String::as_str),
            Some("00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
    }

    #[test]
    fn w3c_wins_and_injection_keeps_the_producers_context() {
        let both = meta(json!({"traceparent": TP,
            "_sentry_trace_headers": {"sentry-trace": "11111111111111111111111111111111-2222222222222222-1"}}));
        assert_eq!(
            carrier_from_meta(&both)
                .get(TRACEPARENT)
                .map(String::as_str),
            Some(TP)
        );
        let mut m = both.clone();
        let mut other = Carrier::new();
        other.insert(
            TRACEPARENT.into(),
            "00-11111111111111111111111111111111-2222222222222222-01".into(),
        );
        inject_into_meta(&mut m, &other);
        assert_eq!(m, both);
        let mut empty = Map::new();
        inject_into_meta(&mut empty, &other);
        assert_eq!(empty.len(), 1);
    }
}
