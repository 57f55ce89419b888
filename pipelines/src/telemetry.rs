//! OpenTelemetry spans of the pipelines (issue 21): one INTERNAL span per stage and one CLIENT
//! (PRODUCER for the notification) span per outgoing call, with the semantic-convention
//! attributes, and the W3C context of the client span put on the wire.
//!
//! Everything here is plain `tracing`: the engine runs each job inside its `process <queue>`
//! span and, when OpenTelemetry is configured, a `tracing-opentelemetry` layer turns these
//! spans into OpenTelemetry spans (`otel.name`, `otel.kind`, `otel.status_code` are its special
//! fields). Without that layer the spans cost what any disabled span costs and the carriers
//! are empty (no-op propagator), so no `traceparent` header is sent.

use std::fmt::Display;
use std::future::Future;

use lapin::types::{AMQPValue, FieldTable};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::PipelineError;
use crate::model::DocumentRef;

/// The INTERNAL span of one pipeline stage (`otel.name` = the stage). Its attribute fields
/// are declared empty so each stage records the ones it learns on `Span::current()`.
pub(crate) fn stage(name: &'static str, doc: &DocumentRef) -> Span {
    tracing::info_span!(
        "pipeline.stage",
        otel.name = name,
        otel.kind = "internal",
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
        mindora.stage = name,
        mindora.app = doc.app.as_str(),
        mindora.document.id = %doc.document_id,
        mindora.document.bucket = doc.bucket.as_str(),
        mindora.document.key = doc.key.as_str(),
        mindora.document.bytes = Empty,
        mindora.document.format = Empty,
        mindora.document.mime = Empty,
        mindora.document.pages = Empty,
        mindora.chunks.count = Empty,
        mindora.vectors.count = Empty,
        mindora.vectors.dimensions = Empty,
        mindora.index.fulltext = Empty,
        mindora.index.vectors = Empty,
        mindora.notify.event = Empty,
    )
}

/// Runs `fut` inside the stage span `span`; a failure marks the span ERROR and adds an
/// `exception` event.
pub(crate) async fn in_stage<T, F>(span: Span, fut: F) -> Result<T, PipelineError>
where
    F: Future<Output = Result<T, PipelineError>>,
{
    let out = fut.instrument(span.clone()).await;
    if let Err(e) = &out {
        failed(&span, e.kind(), e, true);
    }
    out
}

/// Runs `fut` inside the client span `span`; a failure marks the span ERROR with `error.type`
/// (no exception event: the stage above records the exception once).
pub(crate) async fn in_client<T, F>(span: Span, fut: F) -> Result<T, PipelineError>
where
    F: Future<Output = Result<T, PipelineError>>,
{
    let out = fut.instrument(span.clone()).await;
    if let Err(e) = &out {
        failed(&span, e.kind(), e, false);
    }
    out
}

/// Marks `span` failed: status ERROR with the message, `error.type`, and with `exception` an
/// `exception` event as the OpenTelemetry exception conventions describe.
pub(crate) fn failed(span: &Span, kind: &str, message: &dyn Display, exception: bool) {
    let message = message.to_string();
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message.as_str());
    span.record("error.type", kind);
    if exception {
        tracing::event!(
            parent: span,
            tracing::Level::WARN,
            { "exception.type" = kind, "exception.message" = message.as_str() },
            "exception"
        );
    }
}

/// A URL without its user info (credentials never go into a span).
pub(crate) fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

/// Host and port of a URL (`server.address`, `server.port`).
pub(crate) fn server_of(raw: &str) -> (String, Option<u16>) {
    match url::Url::parse(raw) {
        Ok(u) => (
            u.host_str().unwrap_or_default().to_string(),
            u.port_or_known_default(),
        ),
        Err(_) => (String::new(), None),
    }
}

/// CLIENT span of an S3 call (`rpc.system = aws-api`).
pub(crate) fn s3(method: &'static str, bucket: &str, key: &str, server: &str) -> Span {
    tracing::info_span!(
        "s3.request",
        otel.name = format!("S3.{method}").as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
        rpc.system = "aws-api",
        rpc.service = "S3",
        rpc.method = method,
        aws.s3.bucket = bucket,
        aws.s3.key = key,
        server.address = server,
        http.response.body.size = Empty,
    )
}

/// CLIENT span of a call to the OpenAI-compatible API (`gen_ai.*` and `http.*`).
pub(crate) fn gen_ai(operation: &'static str, model: &str, url: &str, server: &str) -> Span {
    tracing::info_span!(
        "gen_ai.request",
        otel.name = format!("{operation} {model}").as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        mindora.embed.batch_size = Empty,
        http.request.method = "POST",
        url.full = url,
        server.address = server,
    )
}

/// CLIENT span of a database call (`db.system.name` elasticsearch, qdrant, postgresql).
pub(crate) fn db(system: &'static str, operation: &str, collection: &str, server: &str) -> Span {
    let name = if collection.is_empty() {
        operation.to_string()
    } else {
        format!("{operation} {collection}")
    };
    let span = tracing::info_span!(
        "db.request",
        otel.name = name.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = Empty,
        db.namespace = Empty,
        db.query.summary = Empty,
        db.operation.batch.size = Empty,
        server.address = Empty,
        http.response.status_code = Empty,
    );
    if !collection.is_empty() {
        span.record("db.collection.name", collection);
    }
    if !server.is_empty() {
        span.record("server.address", server);
    }
    span
}

/// PRODUCER (RabbitMQ) or CLIENT (Redis PUBLISH) span of a notification.
pub(crate) fn publish(system: &'static str, destination: &str) -> Span {
    tracing::info_span!(
        "messaging.publish",
        otel.name = format!("send {destination}").as_str(),
        otel.kind = if system == "rabbitmq" {
            "producer"
        } else {
            "client"
        },
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
        messaging.system = system,
        messaging.destination.name = destination,
        "messaging.operation.type" = "send",
        messaging.operation.name = "publish",
        messaging.message.body.size = Empty,
    )
}

/// The current span's W3C context (`traceparent`, `tracestate`); empty when tracing is off.
/// Called inside a client span, it names that span.
pub(crate) fn context() -> mindora_sdk::trace::Carrier {
    mindora_sdk::trace::current()
}

/// The current span's context as HTTP headers (skipping anything not a valid header).
pub(crate) fn http_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for (k, v) in context() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The current span's context as AMQP headers (string values, as pika's instrumentation and
/// the engine's AMQP source read them); `None` when tracing is off.
pub(crate) fn amqp_headers() -> Option<FieldTable> {
    let carrier = context();
    if carrier.is_empty() {
        return None;
    }
    let mut table = FieldTable::default();
    for (k, v) in carrier {
        table.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redacted_url("https://user:secret@api.example.com:8443/v1/embeddings"),
            "https://api.example.com:8443/v1/embeddings"
        );
        assert_eq!(
            server_of("http://127.0.0.1:9200"),
            ("127.0.0.1".to_string(), Some(9200))
        );
    }

    #[test]
    fn no_context_without_opentelemetry() {
        // No layer, no global propagator: nothing to inject.
        let _g = tracing::info_span!("x").entered();
        assert!(context().is_empty());
        assert!(http_headers().is_empty());
        assert!(amqp_headers().is_none());
    }
}
