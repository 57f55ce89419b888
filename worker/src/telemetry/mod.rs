//! Traces (OpenTelemetry), off unless the standard `OTEL_*` variables ask for them.
//!
//! - [`settings`]: whether tracing is on, from the variables every OpenTelemetry SDK reads.
//! - [`export`]: the OTLP exporter (gRPC or HTTP/protobuf), counted: a dead collector is
//!   logged and counted, and never blocks or fails a job (the SDK's batch processor runs
//!   on its own thread with a bounded queue; a full queue drops spans, not jobs).
//! - [`span`]: the CONSUMER span of one job attempt, after the OpenTelemetry messaging
//!   conventions, continuing the producer's trace.
//!
//! Off (no endpoint set) nothing is installed: no layer, no propagator, no span is built
//! for OpenTelemetry, and the SDK writes no trace keys into jobs.

pub mod export;
pub mod settings;
pub mod span;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Filtered};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub use settings::Settings;

/// The service name when `OTEL_SERVICE_NAME` (and `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) leave it unset.
pub const DEFAULT_SERVICE_NAME: &str = "mindora-worker";

/// Spans of these targets never become OpenTelemetry spans: the exporter's own HTTP and
/// gRPC stack (a span per export would feed itself) and the connection internals.
const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,lapin=off";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static WORKER_NAME: OnceLock<String> = OnceLock::new();

/// Why tracing could not start (the worker runs on without it).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the variables (e.g. an unknown protocol).
    #[error("OTLP exporter from OTEL_* variables: {0}")]
    Exporter(String),
    /// Tracing was started twice in one process.
    #[error("tracing is already started in this process")]
    AlreadyStarted,
}

/// The installed tracer provider, so the process can flush it before it exits.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// A boxed layer, so the logging set-up can add it or not.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

impl Telemetry {
    /// Starts the provider and the W3C propagator when `settings` say tracing is on.
    pub fn start(settings: &Settings) -> Result<Option<Telemetry>, TelemetryError> {
        if !settings.enabled {
            return Ok(None);
        }
        let exporter = export::build()?;
        let resource = if settings.service_name_set {
            Resource::builder().build()
        } else {
            Resource::builder()
                .with_service_name(DEFAULT_SERVICE_NAME)
                .build()
        };
        // The builder reads OTEL_TRACES_SAMPLER / _ARG itself (default parent-based
        // always-on): a producer's sampling decision is kept.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(export::Counted::new(exporter))
            .with_resource(resource)
            .build();
        PROVIDER
            .set(provider.clone())
            .map_err(|_| TelemetryError::AlreadyStarted)?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Some(Telemetry { provider }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans (filtered: the
    /// engine's `job` log span and the exporter's own stack are not exported).
    pub fn layer<S>(&self) -> BoxedLayer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("mindora-worker");
        let levels = EnvFilter::try_new(OTEL_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
        // Spans (not the engine's log-only `job` span), and only the events worth a span
        // event (warnings and errors: a failing stage's `exception`): every info line of
        // every job as a span event cost more than the span itself.
        fn wanted(meta: &tracing::Metadata<'_>) -> bool {
            if meta.is_span() {
                !(meta.name() == "job" && meta.target() == "mindora_worker::core")
            } else {
                *meta.level() <= tracing::Level::WARN
            }
        }
        // A `FilterFn` reads only metadata, so its answer is cached per callsite.
        let wanted = tracing_subscriber::filter::filter_fn(wanted);
        // No per-span thread ids, targets, source locations, busy/idle clocks or OpenTelemetry
        // context activation (clock reads and a thread-local push on every poll of every job
        // future): none answers a question a job trace asks, and our propagation reads the
        // tracing span's context directly (`mindora_sdk::trace`).
        let layer: Filtered<_, _, S> = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_context_activation(false)
            .with_filter(levels.and(wanted));
        Box::new(layer)
    }
}

/// Flushes and stops the exporter (bounded by the SDK's timeouts); call before exit.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at exit");
        }
    }
}

/// Whether spans are exported in this process.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Names this process's worker on its spans (`mindora.worker.name`).
pub fn set_worker_name(name: &str) {
    let _ = WORKER_NAME.set(name.to_string());
}

pub(crate) fn worker_name() -> &'static str {
    WORKER_NAME.get().map_or("", String::as_str)
}
