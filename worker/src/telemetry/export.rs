//! The OTLP exporter, built from the standard variables, and counted.

use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use super::TelemetryError;
use crate::metrics as m;

/// The OTLP span exporter the variables describe: `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`
/// (`grpc` or `http/protobuf`, the default), endpoint, headers, timeout, compression.
pub fn build() -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))
}

/// An exporter that counts what it sends and logs what it loses (once per failed batch:
/// the batch processor sends one every few seconds at most, so a dead collector is a
/// steady, bounded trickle of warnings, not a flood).
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
}

impl<E> Counted<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        Counted { inner }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => metrics::counter!(m::TRACE_SPANS, "result" => "ok").increment(spans),
            Err(e) => {
                metrics::counter!(m::TRACE_EXPORT_FAILURES).increment(1);
                metrics::counter!(m::TRACE_SPANS, "result" => "failed").increment(spans);
                tracing::warn!(error = %e, spans, "trace export failed; these spans are lost");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
