//! Python tasks: a supervised pool of Python processes that runs unmodified rq jobs whose
//! function is not built into the worker.
//!
//! The Rust side keeps everything rq's worker does around a job (claiming, heartbeats,
//! retries, timeouts, recovery, metrics, result bookkeeping); a runner process
//! (`python -m mindora_runner`, shipped in `python/`) only imports the function by its dotted
//! name, decodes the arguments with the job's serializer, calls it and sends back the
//! serialized return value or rq's `exc_string`. Pickle is executed only in those processes.
//!
//! - [`protocol`]: the framed, versioned wire between the two.
//! - [`process`]: one runner process: start, handshake, frames, exit.
//! - [`pool`]: choosing a process, timeouts (kill and replace), recycling.
//! - [`handler`]: the pool as the registry's fallback handler (how the worker uses it).
//! - [`config`]: the `--python*` flags.
//! - [`peek`]: the function name of a job whose arguments only Python can decode.

pub mod config;
pub mod handler;
pub mod peek;
pub mod pool;
pub mod process;
pub mod protocol;

pub use config::{PoolConfig, PythonArgs};
pub use handler::PythonHandler;
pub use pool::{PoolStats, PythonPool};

use std::time::Duration;

/// One rq job for the pool: the runner reads the job hash itself.
#[derive(Debug, Clone, Default)]
pub struct PyJob {
    /// rq job id.
    pub id: String,
    /// Queue it came from.
    pub origin: String,
    /// rq's `job_timeout` (None: no limit).
    pub timeout: Option<Duration>,
    /// W3C trace headers the runner makes current around the call (empty: none). The
    /// worker's handler fills them from the attempt's span
    /// ([`mindora_sdk::trace::current`]), so Python code instrumented with OpenTelemetry
    /// continues the worker's trace.
    pub trace: mindora_sdk::trace::Carrier,
}

/// Why a Python job did not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function (or its success callback) raised.
    Raised,
    /// It ran past its timeout; its process was killed (or its task cancelled).
    Timeout,
    /// Its process died under it (segfault, OOM kill, `os._exit`, ...).
    ProcessDied,
    /// Stopped on request.
    Stopped,
    /// No Python process could be started.
    Unavailable,
    /// No process became free within `--python-wait-secs`; the job never started.
    WaitTimeout,
}

/// A failed Python job, with the text rq stores as `exc_string`.
#[derive(Debug, Clone)]
pub struct PyFailure {
    /// What happened.
    pub kind: FailureKind,
    /// Exception class name (`ValueError`, `JobTimeoutException`, ...).
    pub exc_type: String,
    /// rq's `exc_string`: the full traceback for raised exceptions, else the reason.
    pub exc_string: String,
}

impl PyFailure {
    /// Whether rq's retry policy applies (everything but a stop, as in rq).
    pub fn retryable(&self) -> bool {
        self.kind != FailureKind::Stopped
    }

    /// Whether the job's `on_failure` / `on_stopped` callback ran or will run in the pool
    /// (not when the job never reached a process).
    pub fn callbacks_run(&self) -> bool {
        !matches!(
            self.kind,
            FailureKind::Unavailable | FailureKind::WaitTimeout
        )
    }

    /// The exception's message without its type (`bad input` for `ValueError: bad input`),
    /// so that log lines showing `type: message` do not repeat the type.
    pub fn message(&self) -> &str {
        let last = self.summary();
        match last.split_once(": ") {
            Some((head, rest))
                if head == self.exc_type || head.ends_with(&format!(".{}", self.exc_type)) =>
            {
                rest
            }
            _ => last,
        }
    }

    /// The last line of the traceback (`ValueError: bad input`), for logs.
    pub fn summary(&self) -> &str {
        self.exc_string
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(&self.exc_type)
    }
}

/// What became of a Python job.
#[derive(Debug, Clone)]
pub enum PyOutcome {
    /// Returned: `serializer.dumps(return_value)`, made by the job's own serializer.
    Returned(Vec<u8>),
    /// Raised, timed out, or its process died.
    Failed(PyFailure),
}

impl PyOutcome {
    fn failed(kind: FailureKind, exc_type: &str, exc_string: String) -> Self {
        PyOutcome::Failed(PyFailure {
            kind,
            exc_type: exc_type.to_string(),
            exc_string,
        })
    }
}

/// The pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The interpreter could not be started.
    #[error("cannot start {interpreter}: {source}")]
    Spawn {
        /// Interpreter path.
        interpreter: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runner did not say hello in time, or said something else.
    #[error("Python runner did not start: {0}")]
    Handshake(String),
}

/// Starts the pool when `--python` is on (None when off); a pool that cannot start is a
/// start-up error with the reason.
pub async fn start_pool(
    args: &PythonArgs,
    redis: &mindora_sdk::connect::RedisSettings,
) -> Result<Option<PythonPool>, PoolError> {
    if !args.enabled {
        return Ok(None);
    }
    let cfg = PoolConfig::from_args(args, redis);
    tracing::info!(
        interpreter = %cfg.interpreter.display(),
        processes = cfg.processes,
        "starting the Python pool (--python: jobs from Redis run as Python code, pickle included)"
    );
    PythonPool::start(cfg).await.map(Some)
}
