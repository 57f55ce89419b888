//! The RQ wire format: every Redis key, hash field, status, registry and encoding that
//! Python `rq` (2.12 and 3.0, which agree on the wire) reads and writes.
//!
//! This module is the single source of truth shared by [`crate::Client`] (enqueue side) and
//! `mindora-worker` (execution side). It holds no connection and performs no I/O: it only
//! names keys and turns values into the exact bytes rq expects, and back.
//!
//! The format was taken from rq's own source (`rq/job.py`, `rq/queue.py`, `rq/results.py`,
//! `rq/registry.py`, `rq/executions.py`, `rq/worker/base.py`) and checked against a `MONITOR`
//! capture of a real rq worker; the interop tests in `tests/` keep it honest.

pub mod job;
pub mod keys;
pub mod result;
pub mod retry;
pub mod scripts;
pub mod serializer;
pub mod status;
pub mod time;
pub mod trace;

pub use job::{JobHash, NewJob};
pub use result::{ResultEntry, ResultType};
pub use retry::RetryPolicy;
pub use serializer::{JobCall, Serializer};
pub use status::JobStatus;

/// Default job timeout in seconds, as rq's `DEFAULT_TIMEOUT`.
pub const DEFAULT_JOB_TIMEOUT_SECS: i64 = 180;
/// Default time a successful job and its result are kept, as rq's `DEFAULT_RESULT_TTL`.
pub const DEFAULT_RESULT_TTL_SECS: i64 = 500;
/// Default time a failed job is kept, as rq's `DEFAULT_FAILURE_TTL` (one year).
pub const DEFAULT_FAILURE_TTL_SECS: i64 = 31_536_000;
/// Grace added to a job's timeout for its started-registry entry, as rq's heartbeat TTL.
pub const STARTED_GRACE_SECS: i64 = 60;
/// How many results rq keeps per job stream (`XADD ... MAXLEN ~ 10`).
pub const RESULTS_MAXLEN: usize = 10;
/// Worker hash TTL while idle, as rq's `DEFAULT_WORKER_TTL`.
pub const WORKER_TTL_SECS: i64 = 420;
