//! Logging (and, when the `OTEL_*` variables ask for it, tracing) set-up, with a log filter
//! that can be replaced while the worker runs (log level from Consul KV).
//!
//! The log filter applies to the log lines only: with tracing on, spans have their own
//! fixed `info` filter, so a quieter log level (`warn`) never switches traces off. JSON
//! lines of a traced job carry its `trace_id` and `span_id` at the top level, so a log line
//! finds its trace and a trace its log lines.

use std::sync::Arc;

use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

use crate::config::LogFormat;
use crate::telemetry::{Settings, Telemetry};

/// The filter used when `RUST_LOG` is unset and nothing else says otherwise.
pub const DEFAULT_FILTER: &str = "info";

type Reload = Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the log filter of the running process.
#[derive(Clone)]
pub struct LogLevelHandle(Reload);

impl std::fmt::Debug for LogLevelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLevelHandle")
    }
}

impl LogLevelHandle {
    /// Applies `directives` (EnvFilter syntax, e.g. `info,mindora_worker=debug`).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        (self.0)(filter)
    }
}

/// The filter in force at start: `RUST_LOG` or [`DEFAULT_FILTER`].
pub fn initial_filter() -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_string())
}

/// Whether the environment pins the log level (`RUST_LOG` wins over Consul KV).
pub fn env_pinned() -> bool {
    std::env::var_os("RUST_LOG").is_some()
}

fn handle<S: Send + Sync + 'static>(h: reload::Handle<EnvFilter, S>) -> LogLevelHandle {
    LogLevelHandle(Arc::new(move |f| h.reload(f).map_err(|e| e.to_string())))
}

/// Installs the global subscriber (and tracing, when the `OTEL_*` variables turn it on) and
/// returns the handle that changes the log filter. A tracing set-up that fails is reported
/// and the worker runs on without traces.
pub fn init(format: LogFormat) -> LogLevelHandle {
    let filter = EnvFilter::try_new(initial_filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    let telemetry = Telemetry::start(&Settings::from_env());
    let handle = match &telemetry {
        Ok(Some(t)) => {
            // Per-layer filters: the log filter gates the log lines only.
            let (filter, h) = reload::Layer::new(filter);
            let registry = tracing_subscriber::registry().with(t.layer());
            match format {
                LogFormat::Json => registry.with(json_layer(true).with_filter(filter)).init(),
                LogFormat::Text => registry
                    .with(tracing_subscriber::fmt::layer().with_filter(filter))
                    .init(),
            }
            handle(h)
        }
        // Off: one global filter, as cheap as logging without tracing support.
        _ => {
            let (filter, h) = reload::Layer::new(filter);
            let registry = tracing_subscriber::registry().with(filter);
            match format {
                LogFormat::Json => registry.with(json_layer(false)).init(),
                LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
            }
            handle(h)
        }
    };
    match telemetry {
        Ok(Some(_)) => tracing::info!("tracing on: spans are exported over OTLP"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "tracing is off: the OTEL_* settings are not usable"),
    }
    handle
}

/// JSON lines: tracing-subscriber's JSON shape (flattened event fields, the current span
/// and the span list), plus `trace_id` / `span_id` of the innermost traced span.
fn json_layer<S>(with_ids: bool) -> json_subscriber::fmt::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut layer = json_subscriber::fmt::layer().flatten_event(true);
    if with_ids {
        layer
            .inner_layer_mut()
            .add_multiple_dynamic_fields(|event, ctx, writer| {
                let Some(scope) = ctx.event_scope(event) else {
                    return;
                };
                let ids: Vec<tracing::span::Id> = scope.map(|span| span.id()).collect();
                let found = tracing::dispatcher::get_default(|dispatch| {
                    ids.iter().find_map(|id| {
                        use opentelemetry::trace::TraceContextExt;
                        let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
                        let sc = cx.span().span_context().clone();
                        sc.is_valid().then_some(sc)
                    })
                });
                if let Some(sc) = found {
                    let _ = writer.write_field("trace_id", sc.trace_id().to_string());
                    let _ = writer.write_field("span_id", sc.span_id().to_string());
                }
            });
    }
    layer
}
