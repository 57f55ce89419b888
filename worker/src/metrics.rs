//! Prometheus metrics and the health flags the HTTP endpoints ([`crate::http`]) report.
//!
//! Metric names are a contract with `infra/` (alert rules, Grafana dashboards); a test
//! checks the dashboards against what this module really exports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: executions started.
pub const JOBS_STARTED: &str = "mindora_jobs_started_total";
/// Counter: executions that returned.
pub const JOBS_FINISHED: &str = "mindora_jobs_finished_total";
/// Counter: executions that raised, timed out or were stopped (retried or not).
pub const JOBS_FAILED: &str = "mindora_jobs_failed_total";
/// Counter: failures that were given another attempt.
pub const JOBS_RETRIED: &str = "mindora_jobs_retried_total";
/// Counter: jobs out of attempts, now in the failed registry / DLQ.
pub const JOBS_DEAD_LETTERED: &str = "mindora_jobs_dead_lettered_total";
/// Histogram: execution time in seconds.
pub const JOB_DURATION: &str = "mindora_job_duration_seconds";
/// Gauge: executions running in this process.
pub const JOBS_IN_FLIGHT: &str = "mindora_jobs_in_flight";
/// Gauge: jobs waiting per queue (lane).
pub const QUEUE_DEPTH: &str = "mindora_queue_depth";
/// Gauge: age of the oldest waiting job per queue.
pub const QUEUE_OLDEST_AGE: &str = "mindora_queue_oldest_job_age_seconds";
/// Gauge (1): worker identity.
pub const WORKER_INFO: &str = "mindora_worker_info";
/// Gauge: configured concurrency.
pub const WORKER_CONCURRENCY: &str = "mindora_worker_concurrency";
/// Counter: outcomes dropped by fencing: the execution had already been recovered (its
/// worker's lease lapsed) and a newer execution owns the job.
pub const STALE_OUTCOMES: &str = "mindora_stale_outcomes_total";
/// Counter: recoveries after the Redis connection failed.
pub const REDIS_RECONNECTS: &str = "mindora_redis_reconnects_total";
/// Gauge: Python pool processes by `state` (`busy`: running a job or callback, `idle`).
pub const PYTHON_PROCESSES: &str = "mindora_python_processes";
/// Histogram: seconds a Python job waited for a free process (its timeout starts after).
pub const PYTHON_WAIT: &str = "mindora_python_process_wait_seconds";
/// Counter: Python jobs failed because no process became free within `--python-wait-secs`.
pub const PYTHON_WAIT_TIMEOUTS: &str = "mindora_python_process_wait_timeouts_total";
/// Counter: Python processes killed or lost and replaced, by `reason` (`timeout`,
/// `stopped`, `callback_timeout`, `crashed`, `hung`).
pub const PYTHON_RESTARTS: &str = "mindora_python_process_restarts_total";
/// Counter: Python processes recycled, by `reason` (`max_jobs`, `max_rss`).
pub const PYTHON_RECYCLES: &str = "mindora_python_process_recycles_total";
/// Counter: OTLP export calls that failed (collector down, refused, timed out); their spans
/// are lost, the jobs are not affected.
pub const TRACE_EXPORT_FAILURES: &str = "mindora_trace_export_failures_total";
/// Counter: spans exported, by `result` (`ok`, `failed`).
pub const TRACE_SPANS: &str = "mindora_trace_spans_total";

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Liveness and readiness, shared with the loops that know.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the worker registered and its loops run.
    pub started: AtomicBool,
    /// Set when shutting down (ready turns false so traffic drains).
    pub stopping: AtomicBool,
    /// Unix seconds of the last successful Redis round trip.
    pub last_redis_ok: AtomicI64,
    /// Whether the AMQP source is on (then readiness needs its session).
    pub amqp_enabled: AtomicBool,
    /// Whether the AMQP session is up and consuming.
    pub amqp_up: AtomicBool,
}

impl Health {
    /// Records a successful Redis round trip.
    pub fn redis_ok(&self) {
        self.last_redis_ok
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// Shutdown began: not ready any more.
    pub fn set_draining(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Records whether the AMQP session is up.
    pub fn set_amqp_up(&self, up: bool) {
        self.amqp_up.store(up, Ordering::Relaxed);
    }

    /// Ready for work: started, not draining, Redis answered in the last 30 s, and the
    /// AMQP session up when AMQP is on.
    pub fn ready(&self) -> bool {
        let fresh =
            chrono::Utc::now().timestamp() - self.last_redis_ok.load(Ordering::Relaxed) < 30;
        let amqp =
            !self.amqp_enabled.load(Ordering::Relaxed) || self.amqp_up.load(Ordering::Relaxed);
        self.started.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && fresh
            && amqp
    }
}

/// Errors setting metrics up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be built or installed.
    #[error("metrics recorder: {0}")]
    Build(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Installs the global recorder (once per process).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), DURATION_BUCKETS)
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .set_buckets_for_metric(Matcher::Full(PYTHON_WAIT.into()), DURATION_BUCKETS)
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Build(e.to_string()))
}
