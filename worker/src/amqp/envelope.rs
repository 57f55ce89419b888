//! From a delivery to a task: the body is the envelope (`mindora_sdk::amqp::Envelope`),
//! the attempt number and failure history ride in headers so the body stays intact from
//! first publish to the DLQ.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use mindora_sdk::amqp::{AttemptRecord, Envelope, HEADER_ATTEMPT, HEADER_HISTORY};

/// A delivery that is a valid envelope, with the effective attempt settings.
#[derive(Debug, Clone)]
pub struct Task {
    /// The envelope as published.
    pub envelope: Envelope,
    /// Task id (envelope id, else `message_id`, else a fresh UUID).
    pub id: String,
    /// This attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed in total.
    pub max_attempts: u32,
    /// Failures before this attempt.
    pub history: Vec<AttemptRecord>,
    /// Handler time limit, if any.
    pub timeout: Option<Duration>,
}

/// Worker-side defaults for fields an envelope may leave out.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Attempts when the envelope sets none.
    pub max_attempts: u32,
    /// Timeout in seconds when the envelope sets none (0: none).
    pub timeout_secs: u64,
}

/// Parses a delivery; `Err` carries the human reason it is not a valid envelope (it goes
/// to the DLQ with that reason).
pub fn parse(body: &[u8], props: &BasicProperties, defaults: Defaults) -> Result<Task, String> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let preview: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into();
        format!("body is not a task envelope ({e}); starts with {preview:?}")
    })?;
    envelope.validate()?;
    let headers = props.headers().as_ref();
    let attempt = headers
        .and_then(|h| header_u64(h, HEADER_ATTEMPT))
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a >= 1)
        .unwrap_or(envelope.attempt);
    let history = headers.map(history).unwrap_or_default();
    let id = if !envelope.id.is_empty() {
        envelope.id.clone()
    } else if let Some(mid) = props.message_id() {
        mid.to_string()
    } else {
        uuid::Uuid::new_v4().to_string()
    };
    let max_attempts = envelope
        .max_attempts
        .unwrap_or(defaults.max_attempts)
        .max(1);
    let timeout_secs = envelope.timeout_secs.unwrap_or(defaults.timeout_secs);
    Ok(Task {
        id,
        attempt,
        max_attempts,
        history,
        timeout: (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs)),
        envelope,
    })
}

/// An integer header, whichever integer type (or decimal string) the publisher used.
pub fn header_u64(headers: &FieldTable, key: &str) -> Option<u64> {
    match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// A string header (long or short string), as trace context headers are sent.
pub fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The producer's trace context (W3C `traceparent` / `tracestate` headers, as pika's and
/// Celery's instrumentations send them) and its publish `timestamp`.
pub fn producer(props: &BasicProperties) -> crate::telemetry::span::Producer {
    use mindora_sdk::wire::trace::{w3c_carrier, TRACEPARENT, TRACESTATE};
    let header = |key| props.headers().as_ref().and_then(|h| header_text(h, key));
    crate::telemetry::span::Producer {
        carrier: w3c_carrier(header(TRACEPARENT), header(TRACESTATE)),
        enqueued_at: enqueued_at(props),
    }
}

/// The publish `timestamp` property (whole seconds), when the producer set it.
pub fn enqueued_at(props: &BasicProperties) -> Option<chrono::DateTime<chrono::Utc>> {
    props
        .timestamp()
        .and_then(|t| chrono::DateTime::from_timestamp(i64::try_from(t).ok()?, 0))
}

/// The failure history header; a damaged one is dropped rather than failing the task.
fn history(headers: &FieldTable) -> Vec<AttemptRecord> {
    let raw = match headers.inner().get(HEADER_HISTORY) {
        Some(AMQPValue::LongString(s)) => s.as_bytes().to_vec(),
        Some(AMQPValue::ShortString(s)) => s.as_str().as_bytes().to_vec(),
        _ => return Vec::new(),
    };
    serde_json::from_slice(&raw).unwrap_or_default()
}

/// The original properties with `headers` set or replaced; `expiration` is dropped so a
/// per-message TTL cannot expire a retried or dead-lettered copy.
pub fn with_headers(
    props: &BasicProperties,
    set: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    for (k, v) in set {
        headers.insert(ShortString::from(k), v);
    }
    let mut out = BasicProperties::default().with_headers(headers);
    if let Some(v) = props.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    out = out.with_delivery_mode(props.delivery_mode().unwrap_or(2));
    if let Some(v) = props.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = props.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = props.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

/// A string header value.
pub fn text(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

/// The history as a header value.
pub fn history_value(history: &[AttemptRecord]) -> AMQPValue {
    text(serde_json::to_string(history).unwrap_or_else(|_| "[]".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Defaults = Defaults {
        max_attempts: 3,
        timeout_secs: 0,
    };

    #[test]
    fn attempt_comes_from_header_then_body() {
        let body = br#"{"function":"f","attempt":2}"#;
        let t = parse(body, &BasicProperties::default(), D).unwrap();
        assert_eq!((t.attempt, t.max_attempts), (2, 3));
        let mut h = FieldTable::default();
        h.insert(HEADER_ATTEMPT.into(), AMQPValue::LongLongInt(4));
        h.insert(
            HEADER_HISTORY.into(),
            text(r#"[{"attempt":1,"kind":"E","message":"m","at":"t"}]"#),
        );
        let t = parse(body, &BasicProperties::default().with_headers(h), D).unwrap();
        assert_eq!(t.attempt, 4);
        assert_eq!(t.history.len(), 1);
        assert!(!t.id.is_empty());
    }

    #[test]
    fn malformed_bodies_have_reasons() {
        for body in [&b"not json"[..], b"[]", br#"{"function":""}"#, b"\xff\xfe"] {
            let err = parse(body, &BasicProperties::default(), D).unwrap_err();
            assert!(!err.is_empty());
        }
    }
}
