//! Logging set-up with a filter that can be replaced while the worker runs (log level from
//! Consul KV).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset and nothing else says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// Replaces the log filter of the running process.
#[derive(Clone)]
pub struct LogLevelHandle(reload::Handle<EnvFilter, Registry>);

impl std::fmt::Debug for LogLevelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLevelHandle")
    }
}

impl LogLevelHandle {
    /// Applies `directives` (EnvFilter syntax, e.g. `info,mindora_worker=debug`).
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
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

/// Installs the global subscriber and returns the handle that changes its filter.
pub fn init(format: LogFormat) -> LogLevelHandle {
    let filter = EnvFilter::try_new(initial_filter()).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
    LogLevelHandle(handle)
}
