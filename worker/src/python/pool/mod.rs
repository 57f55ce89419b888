//! The pool: picks a process for each job, enforces the job's timeout by killing the
//! process (or cancelling an `async def` task), recycles processes after max jobs / max
//! RSS, and keeps `processes` runners alive.
//!
//! A process takes a job when it runs nothing, or when everything it runs is `async def`
//! and it has a free async slot: a plain function always has its process to itself, as in
//! rq's work horse, and never waits behind another job inside Python.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::process;
use super::{PoolConfig, PoolError, PyOutcome};
use crate::metrics as m;

mod dispatch;
mod supervision;

/// What a process is doing with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sent; the runner has not said how it runs.
    Pending,
    /// A plain function: the process is busy.
    Sync,
    /// An `async def` function on the event loop.
    Async,
    /// Cancelled for a timeout; the outcome is no longer awaited.
    Cancelling,
}

/// Events for the task waiting on one request.
pub(crate) enum Event {
    /// A callback started: its own timeout applies from now.
    Phase(u64),
    /// The outcome.
    Done(PyOutcome),
}

struct InFlight {
    job_id: String,
    mode: Mode,
    events: mpsc::UnboundedSender<Event>,
}

/// Why the pool ended a process (for its exit log line and the restart / recycle metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// Recycled after `--python-max-jobs` jobs.
    MaxJobs,
    /// Recycled above `--python-max-rss-mb`.
    MaxRss,
    /// Killed: its job ran past its timeout.
    Timeout,
    /// Killed: its job was stopped or dropped by the worker (stop command, shutdown).
    Stopped,
    /// Killed: a callback run after its job's process was lost ran past its timeout.
    CallbackTimeout,
}

impl ExitReason {
    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ExitReason::MaxJobs => "max_jobs",
            ExitReason::MaxRss => "max_rss",
            ExitReason::Timeout => "timeout",
            ExitReason::Stopped => "stopped",
            ExitReason::CallbackTimeout => "callback_timeout",
        }
    }

    /// Whether it is a recycle (else a kill).
    pub(crate) fn is_recycle(self) -> bool {
        matches!(self, ExitReason::MaxJobs | ExitReason::MaxRss)
    }

    /// For log lines.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ExitReason::MaxJobs => "recycled after --python-max-jobs jobs",
            ExitReason::MaxRss => "recycled above --python-max-rss-mb",
            ExitReason::Timeout => "killed: its job ran past its timeout",
            ExitReason::Stopped => "killed: its job was stopped or given up",
            ExitReason::CallbackTimeout => "killed: a callback ran past its timeout",
        }
    }
}

/// Every restart and recycle `reason` label, published at 0 from the start so dashboards
/// and alerts see the series before the first event.
const RESTART_REASONS: &[&str] = &["timeout", "stopped", "callback_timeout", "crashed", "hung"];
const RECYCLE_REASONS: &[&str] = &["max_jobs", "max_rss"];

/// One live process as the pool sees it.
pub(crate) struct ProcEntry {
    pid: u32,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    kill: CancellationToken,
    async_slots: usize,
    in_flight: HashMap<u64, InFlight>,
    jobs: u64,
    retiring: bool,
    exit_reason: Option<ExitReason>,
}

impl ProcEntry {
    pub(crate) fn new(
        pid: u32,
        tx: mpsc::UnboundedSender<Vec<u8>>,
        kill: CancellationToken,
        async_slots: usize,
    ) -> Self {
        ProcEntry {
            pid,
            tx,
            kill,
            async_slots,
            in_flight: HashMap::new(),
            jobs: 0,
            retiring: false,
            exit_reason: None,
        }
    }

    fn takes_job(&self) -> bool {
        !self.retiring
            && (self.in_flight.is_empty()
                || (self.in_flight.len() < self.async_slots
                    && self.in_flight.values().all(|f| f.mode == Mode::Async)))
    }
}

#[derive(Default)]
struct State {
    procs: HashMap<u64, ProcEntry>,
    next_id: u64,
    last_start_error: Option<String>,
    failed_starts: u32,
}

impl State {
    /// Sets the busy / idle gauges from the live processes (call after every change).
    fn publish(&self) {
        let busy = self
            .procs
            .values()
            .filter(|e| !e.in_flight.is_empty())
            .count();
        let idle = self.procs.len() - busy;
        metrics::gauge!(m::PYTHON_PROCESSES, "state" => "busy").set(busy as f64);
        metrics::gauge!(m::PYTHON_PROCESSES, "state" => "idle").set(idle as f64);
    }
}

/// Counters, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Processes started.
    pub started: u64,
    /// Processes recycled (max jobs / max RSS).
    pub recycled: u64,
    /// Processes killed for a timeout or stop.
    pub killed: u64,
    /// Jobs that gave up waiting for a free process (`--python-wait-secs`).
    pub wait_timeouts: u64,
}

/// Shared by the pool handle and the process supervisors.
pub(crate) struct Inner {
    pub(crate) cfg: PoolConfig,
    state: Mutex<State>,
    changed: Notify,
    next_tag: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    started: AtomicU64,
    recycled: AtomicU64,
    killed: AtomicU64,
    wait_timeouts: AtomicU64,
}

/// A supervised pool of Python runner processes.
#[derive(Clone)]
pub struct PythonPool {
    inner: Arc<Inner>,
}

impl PythonPool {
    /// Starts `cfg.processes` processes; fails if the first cannot start (a wrong
    /// interpreter or a missing `mindora_runner` is a configuration error).
    pub async fn start(cfg: PoolConfig) -> Result<Self, PoolError> {
        let n = cfg.processes.max(1);
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            next_tag: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            started: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            killed: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
        });
        // The metrics recorder may be installed after the pool starts (the worker starts
        // the pool first): the series are published again every second.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(inner) if !inner.shutdown.is_cancelled() => inner.publish_series(),
                    _ => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let (tx, rx) = oneshot::channel();
        process::launch(inner.clone(), Some(tx));
        for _ in 1..n {
            process::launch(inner.clone(), None);
        }
        match rx.await {
            Ok(Ok(())) => Ok(PythonPool { inner }),
            Ok(Err(e)) => {
                inner.shutdown.cancel();
                Err(e)
            }
            Err(_) => Err(PoolError::Handshake("the starting task ended".into())),
        }
    }

    /// Pids of the live processes (tests check replacement and recycling with them).
    pub fn pids(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self.inner.lock().procs.values().map(|e| e.pid).collect();
        p.sort_unstable();
        p
    }

    /// Counters since start.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            started: self.inner.started.load(Ordering::Relaxed),
            recycled: self.inner.recycled.load(Ordering::Relaxed),
            killed: self.inner.killed.load(Ordering::Relaxed),
            wait_timeouts: self.inner.wait_timeouts.load(Ordering::Relaxed),
        }
    }

    /// Asks every process to exit, kills those still there after 5 s.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<CancellationToken> = {
                let st = self.inner.lock();
                st.procs.values().map(|e| e.kill.clone()).collect()
            };
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                left.iter().for_each(CancellationToken::cancel);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Inner {
    /// Every series of the pool, restart / recycle reasons at 0 until the first one, so
    /// dashboards and alerts see them from the start.
    fn publish_series(&self) {
        for reason in RESTART_REASONS {
            metrics::counter!(m::PYTHON_RESTARTS, "reason" => *reason).increment(0);
        }
        for reason in RECYCLE_REASONS {
            metrics::counter!(m::PYTHON_RECYCLES, "reason" => *reason).increment(0);
        }
        metrics::counter!(m::PYTHON_WAIT_TIMEOUTS).increment(0);
        self.lock().publish();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
