//! What the console shows and does, apart from HTTP: each submodule one concern, each
//! function testable against real Redis, RabbitMQ and PostgreSQL.
//!
//! CONTRACT (written before the code, so the web layer and this layer were built at once):
//! the types below are what pages render; the functions named in each module's doc are
//! what routes call. Change a signature only together with its callers.

use chrono::{DateTime, Utc};
use serde::Serialize;

pub mod actions;
pub mod cron;
pub mod dlq;
pub mod history;
mod hourly;
pub mod ratelimit;
pub mod redis_view;
pub mod repr;

pub use history::History;
pub use redis_view::{JobSummary, Registry};

/// One rq queue as the overview shows it. Every count is O(1) or O(log n) in Redis
/// (LLEN, ZCARD): no scan of a whole queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueCounts {
    pub name: String,
    pub queued: u64,
    pub started: u64,
    pub scheduled: u64,
    pub deferred: u64,
    pub failed: u64,
    pub finished: u64,
    pub canceled: u64,
    /// Paused by the console (mindora workers skip it; Python rq workers do not know it).
    pub paused: bool,
}

/// One worker (ours or Python rq's) from rq's worker registry.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub name: String,
    /// rq's `state`: busy, idle, suspended, started...
    pub state: String,
    pub queues: Vec<String>,
    /// Job ids it is running now.
    pub current_jobs: Vec<String>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// rq's `version` field (ours writes the rq version it speaks) plus `python_version`.
    pub version: String,
    pub hostname: String,
    pub pid: Option<u32>,
    pub birth: Option<DateTime<Utc>>,
    pub successful_jobs: u64,
    pub failed_jobs: u64,
}

/// The overview's Redis half.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub queues: Vec<QueueCounts>,
    pub workers: Vec<WorkerView>,
    /// `rq suspend` is in force.
    pub suspended: bool,
}

/// A job as Redis holds it (rq 2.12 and 3.0, pickle or JSON serializer).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub status: String,
    pub queue: String,
    pub function: String,
    /// Rendered for display (Python-repr-like); undecodable data says why.
    pub args: String,
    pub kwargs: String,
    pub meta: String,
    pub description: String,
    pub result: Option<String>,
    pub exc_info: Option<String>,
    pub dependency_ids: Vec<String>,
    pub dependent_ids: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub worker_name: Option<String>,
    pub retries_left: Option<i64>,
    pub timeout: Option<String>,
    /// W3C trace id found in `meta` (traceparent), for the trace link.
    pub trace_id: Option<String>,
}

/// One attempt from the history (a row of `mindora_job_attempts`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub ended_at: DateTime<Utc>,
    pub job_id: String,
    pub source: String,
    pub queue: String,
    pub function: String,
    pub attempt: i32,
    pub status: String,
    pub worker: String,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub wait_ms: Option<i64>,
    pub run_ms: i64,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub args_summary: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
}

/// A history search; every field optional; also the filter of a bulk action (its query
/// string is what the audit row records).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Filter {
    pub id: Option<String>,
    pub function: Option<String>,
    pub queue: Option<String>,
    pub status: Option<String>,
    pub worker: Option<String>,
    pub source: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Substring of the error message (trigram index).
    pub error: Option<String>,
}

/// Failed attempts grouped by error.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorGroup {
    pub error_type: String,
    /// The message with digits/ids masked, so "job 17 failed" and "job 18 failed" group.
    pub message: String,
    pub count: i64,
    pub jobs: i64,
    pub last_seen: DateTime<Utc>,
    pub functions: Vec<String>,
}

/// One hour of one function over the last 72 h (overview charts).
#[derive(Debug, Clone, Serialize)]
pub struct HourStat {
    pub hour: DateTime<Utc>,
    pub function: String,
    pub finished: i64,
    pub failed: i64,
    pub p95_run_ms: Option<f64>,
}

/// Whether the history is there and complete.
#[derive(Debug, Clone, Serialize)]
pub enum HistoryState {
    /// No database configured: pages show only what Redis holds, and say so.
    Off,
    /// Configured but not reachable now (the reason).
    Unreachable(String),
    /// Available; `dropped` rows were not written by some writer (the console says so).
    On { dropped: i64 },
}

/// A cron entry from rq's cron scheduler registry.
#[derive(Debug, Clone, Serialize)]
pub struct CronEntryView {
    pub scheduler: String,
    pub name: String,
    pub function: String,
    pub queue: String,
    /// Cron expression or interval text.
    pub schedule: String,
    pub latest: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
    /// Ticks due between `latest` and now that were not enqueued.
    pub missed: u32,
    pub scheduler_heartbeat: Option<DateTime<Utc>>,
}

/// An rq 3.0 rate-limit key.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitView {
    pub key: String,
    pub concurrency: Option<u64>,
    /// Job ids holding a slot now.
    pub in_use: Vec<String>,
    /// Jobs waiting for a slot.
    pub waiting: u64,
}

/// What an action did.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    /// Jobs the action changed.
    pub done: u64,
    /// Jobs it skipped, each with why (not in a state the action applies to, gone...).
    pub skipped: Vec<(String, String)>,
}

/// Errors of the data layer, each naming its cause.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("history database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("job {0} does not exist")]
    NoSuchJob(String),
    #[error("job {id}: {why}")]
    BadJob { id: String, why: String },
    #[error("history is off: no database configured")]
    HistoryOff,
}
