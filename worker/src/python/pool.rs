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
use tracing::{debug, info, warn};

use super::process::{self, Housekeeping};
use super::protocol::{encode, FromRunner, ToRunner};
use super::{FailureKind, PoolConfig, PoolError, PyJob, PyOutcome};

/// An `async def` job cancelled for its timeout gets this long to wind down (its failure
/// callback runs) before its process is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

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

/// One live process as the pool sees it.
pub(crate) struct ProcEntry {
    pid: u32,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    kill: CancellationToken,
    async_slots: usize,
    in_flight: HashMap<u64, InFlight>,
    jobs: u64,
    retiring: bool,
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

/// Counters, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Processes started.
    pub started: u64,
    /// Processes recycled (max jobs / max RSS).
    pub recycled: u64,
    /// Processes killed for a timeout or stop.
    pub killed: u64,
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

    /// Runs one job to its outcome. Dropping the future (a stop command, shutdown) kills
    /// the job's process or cancels its task; the worker never waits on a stuck job.
    pub async fn run(&self, job: PyJob) -> PyOutcome {
        let timeout = job.timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        let msg = |tag| ToRunner::Job {
            tag,
            id: job.id.clone(),
            origin: job.origin.clone(),
            serializer: self.inner.cfg.serializer.clone(),
            timeout,
        };
        let limit = job.timeout;
        match self.dispatch(&job.id, msg, limit).await {
            Ok(PyOutcome::Failed(f)) if f.kind == FailureKind::ProcessDied => {
                self.spawn_late_callback(&job.id, "ProcessDied", f.exc_string.clone());
                PyOutcome::Failed(f)
            }
            Ok(outcome) => outcome,
            Err(Timeout { proc_id, tag }) => {
                warn!(job_id = %job.id, "Python job ran past its timeout");
                let secs = timeout;
                if self.inner.abandon(proc_id, tag, "timeout") {
                    // Its process is gone: the failure callback runs in another one.
                    self.spawn_late_callback(
                        &job.id,
                        "JobTimeoutException",
                        format!("Task exceeded maximum timeout value ({secs} seconds)"),
                    );
                }
                PyOutcome::failed(
                    FailureKind::Timeout,
                    "JobTimeoutException",
                    format!("Traceback (most recent call last):\n  mindora-worker ended job {} at its timeout (a plain function: its process was killed and replaced)\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({secs} seconds)\n", job.id),
                )
            }
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

    fn spawn_late_callback(&self, job_id: &str, exc_type: &'static str, message: String) {
        self.spawn_callback(job_id, "failure", exc_type, message, None);
    }

    /// A job dropped before its deadline was stopped (or requeued at shutdown): its
    /// `on_stopped` callback runs in another process once rq's status reads `stopped`.
    fn spawn_stopped_callback(&self, job_id: &str) {
        if !self.inner.shutdown.is_cancelled() {
            self.spawn_callback(
                job_id,
                "stopped",
                "StopRequested",
                String::new(),
                Some("stopped"),
            );
        }
    }

    fn spawn_callback(
        &self,
        job_id: &str,
        kind: &'static str,
        exc_type: &'static str,
        message: String,
        if_status: Option<&'static str>,
    ) {
        let this = self.clone();
        let id = job_id.to_string();
        tokio::spawn(async move {
            let serializer = this.inner.cfg.serializer.clone();
            let msg = |tag| ToRunner::Callback {
                tag,
                id: id.clone(),
                kind,
                exc_type,
                message: message.clone(),
                serializer: serializer.clone(),
                if_status,
            };
            match this.dispatch(&id, msg, Some(Duration::from_secs(60))).await {
                Ok(PyOutcome::Failed(f)) => {
                    warn!(job_id = %id, kind, error = %f.exc_string, "callback failed")
                }
                Ok(PyOutcome::Returned(_)) => {}
                Err(Timeout { proc_id, tag }) => {
                    warn!(job_id = %id, kind, "callback ran past its timeout");
                    this.inner.abandon(proc_id, tag, "abandoned");
                }
            }
        });
    }

    /// Waits for a process, sends the request, waits for its outcome or `limit`.
    async fn dispatch(
        &self,
        job_id: &str,
        msg: impl Fn(u64) -> ToRunner,
        limit: Option<Duration>,
    ) -> Result<PyOutcome, Timeout> {
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let (events, mut rx) = mpsc::unbounded_channel();
        let Some(proc_id) = self.inner.acquire(tag, job_id, events).await else {
            let why = self
                .inner
                .lock()
                .last_start_error
                .clone()
                .unwrap_or_else(|| "the pool is shutting down".into());
            return Ok(PyOutcome::failed(
                FailureKind::Unavailable,
                "PythonPoolUnavailable",
                format!("no Python process available to run job {job_id}: {why}"),
            ));
        };
        let is_job = matches!(msg(0), ToRunner::Job { .. });
        let mut guard = Abandon {
            pool: self.clone(),
            job_id: job_id.to_string(),
            proc_id,
            tag,
            armed: true,
            deadline: limit.map(|l| tokio::time::Instant::now() + l),
            is_job,
        };
        self.inner.send_frame(proc_id, &msg(tag));
        loop {
            let ev = match guard.deadline {
                Some(d) => tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::time::sleep_until(d) => {
                        guard.armed = false;
                        return Err(Timeout { proc_id, tag });
                    }
                },
                None => rx.recv().await,
            };
            match ev {
                Some(Event::Phase(secs)) => {
                    guard.deadline =
                        Some(tokio::time::Instant::now() + Duration::from_secs(secs.max(1) + 1));
                }
                Some(Event::Done(outcome)) => {
                    guard.armed = false;
                    return Ok(outcome);
                }
                None => {
                    guard.armed = false;
                    return Ok(PyOutcome::failed(
                        FailureKind::ProcessDied,
                        "WorkHorseTerminated",
                        format!("the Python process running job {job_id} went away"),
                    ));
                }
            }
        }
    }
}

struct Timeout {
    proc_id: u64,
    tag: u64,
}

/// Dropped before the outcome (the worker's own timeout, a stop command, shutdown): the job
/// must not run on unseen. A drop at (or within 100 ms of) the job's deadline is taken as
/// its timeout, so the failure callback runs as for the pool's own timeout.
struct Abandon {
    pool: PythonPool,
    job_id: String,
    proc_id: u64,
    tag: u64,
    armed: bool,
    deadline: Option<tokio::time::Instant>,
    is_job: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let timed_out = self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() + Duration::from_millis(100) >= d);
        let reason = if timed_out && self.is_job {
            "timeout"
        } else {
            "abandoned"
        };
        let killed = self.pool.inner.abandon(self.proc_id, self.tag, reason);
        if self.is_job && timed_out && killed {
            self.pool.spawn_late_callback(
                &self.job_id,
                "JobTimeoutException",
                "Task exceeded maximum timeout value".into(),
            );
        } else if self.is_job && !timed_out {
            self.pool.spawn_stopped_callback(&self.job_id);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a process for `tag`; None when none can start or the pool shuts down.
    async fn acquire(
        &self,
        tag: u64,
        job_id: &str,
        events: mpsc::UnboundedSender<Event>,
    ) -> Option<u64> {
        let waiting_since = Instant::now();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if self.shutdown.is_cancelled() {
                    return None;
                }
                let pick = st
                    .procs
                    .iter()
                    .filter(|(_, e)| e.takes_job())
                    .min_by_key(|(_, e)| e.in_flight.len())
                    .map(|(id, _)| *id);
                if let Some(id) = pick {
                    if let Some(e) = st.procs.get_mut(&id) {
                        e.in_flight.insert(
                            tag,
                            InFlight {
                                job_id: job_id.to_string(),
                                mode: Mode::Pending,
                                events,
                            },
                        );
                        return Some(id);
                    }
                }
                if st.procs.is_empty()
                    && st.last_start_error.is_some()
                    && waiting_since.elapsed() > self.cfg.start_timeout
                {
                    return None;
                }
            }
            tokio::select! {
                _ = notified => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    pub(crate) fn send(&self, proc_id: u64, msg: &ToRunner) {
        self.send_frame(proc_id, msg)
    }

    fn send_frame(&self, proc_id: u64, msg: &ToRunner) {
        let frame = match encode(msg, &[]) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot encode a frame");
                return;
            }
        };
        if let Some(e) = self.lock().procs.get(&proc_id) {
            // A closed pipe means the process is dying; its supervisor fails the job.
            let _ = e.tx.send(frame);
        }
    }

    pub(crate) fn register(&self, entry: ProcEntry) -> u64 {
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.procs.insert(id, entry);
            id
        };
        self.changed.notify_waiters();
        id
    }

    /// Removes a dead process; returns whether it was retiring and its orphaned requests.
    pub(crate) fn unregister(
        &self,
        id: u64,
    ) -> (bool, Vec<(String, mpsc::UnboundedSender<Event>)>) {
        let entry = self.lock().procs.remove(&id);
        self.changed.notify_waiters();
        match entry {
            Some(e) => (
                e.retiring,
                e.in_flight
                    .into_values()
                    .filter(|f| f.mode != Mode::Cancelling)
                    .map(|f| (f.job_id, f.events))
                    .collect(),
            ),
            None => (false, Vec::new()),
        }
    }

    pub(crate) fn started_ok(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        st.failed_starts = 0;
        st.last_start_error = None;
    }

    pub(crate) fn start_failed(&self, why: String) {
        let mut st = self.lock();
        st.failed_starts += 1;
        st.last_start_error = Some(why);
    }

    /// Backoff between failing starts: 0.5 s doubling to 30 s.
    pub(crate) fn next_start_pause(&self) -> Duration {
        let n = self.lock().failed_starts.min(6);
        Duration::from_millis(500u64 << n).min(Duration::from_secs(30))
    }

    pub(crate) fn housekeeping(&self, id: u64) -> Housekeeping {
        let st = self.lock();
        match st.procs.get(&id) {
            Some(e) if e.in_flight.is_empty() && (e.retiring || self.shutdown.is_cancelled()) => {
                Housekeeping::Exit
            }
            Some(e) if e.in_flight.is_empty() => Housekeeping::Idle,
            _ => Housekeeping::Busy,
        }
    }

    pub(crate) fn on_frame(self: &Arc<Self>, id: u64, msg: FromRunner, body: Vec<u8>) {
        let (tag, outcome, rss) = match msg {
            FromRunner::Started { tag, mode } => {
                if let Some(f) = self
                    .lock()
                    .procs
                    .get_mut(&id)
                    .and_then(|e| e.in_flight.get_mut(&tag))
                {
                    if f.mode == Mode::Pending {
                        f.mode = Mode::parse(&mode);
                    }
                }
                self.changed.notify_waiters();
                return;
            }
            FromRunner::Phase { tag, timeout } => {
                if let Some(f) = self
                    .lock()
                    .procs
                    .get(&id)
                    .and_then(|e| e.in_flight.get(&tag))
                {
                    let _ = f.events.send(Event::Phase(timeout));
                }
                return;
            }
            FromRunner::Hb { .. } | FromRunner::Hello { .. } => return,
            FromRunner::Ok { tag, rss } => (tag, PyOutcome::Returned(body), rss),
            FromRunner::Err { tag, exc_type, rss } => {
                let kind = if exc_type == "StopRequested" {
                    FailureKind::Stopped
                } else {
                    FailureKind::Raised
                };
                (
                    tag,
                    PyOutcome::failed(kind, &exc_type, String::from_utf8_lossy(&body).into_owned()),
                    rss,
                )
            }
        };
        let mut recycle = None;
        {
            let mut st = self.lock();
            let Some(e) = st.procs.get_mut(&id) else {
                return;
            };
            if let Some(f) = e.in_flight.remove(&tag) {
                let _ = f.events.send(Event::Done(outcome));
                e.jobs += 1;
            }
            let too_many = self.cfg.max_jobs > 0 && e.jobs >= self.cfg.max_jobs;
            let too_big = self.cfg.max_rss_bytes > 0 && rss > self.cfg.max_rss_bytes;
            if !e.retiring && (too_many || too_big) {
                e.retiring = true;
                recycle = Some((e.pid, e.jobs, rss));
            }
        }
        if let Some((pid, jobs, rss)) = recycle {
            info!(
                pid,
                jobs,
                rss_mb = rss / (1024 * 1024),
                "recycling a Python process (max jobs / max RSS); starting its replacement"
            );
            self.recycled.fetch_add(1, Ordering::Relaxed);
            if !self.shutdown.is_cancelled() {
                process::launch(self.clone(), None);
            }
        }
        self.changed.notify_waiters();
    }

    /// Gives up on a request. A plain function's process is killed and replaced (anything
    /// else it ran fails as a dead process); an `async def` task is cancelled (`reason`
    /// tells the runner which callback to run), and its process killed only if the task
    /// does not wind down. Returns whether the process was killed.
    fn abandon(self: &Arc<Self>, proc_id: u64, tag: u64, reason: &'static str) -> bool {
        let mut st = self.lock();
        let Some(e) = st.procs.get_mut(&proc_id) else {
            return false;
        };
        let mode = e.in_flight.get(&tag).map(|f| f.mode);
        match mode {
            Some(Mode::Async) => {
                if let Some(f) = e.in_flight.get_mut(&tag) {
                    f.mode = Mode::Cancelling;
                }
                if let Ok(frame) = encode(&ToRunner::Cancel { tag, reason }, &[]) {
                    let _ = e.tx.send(frame);
                }
                let inner = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CANCEL_GRACE).await;
                    let mut st = inner.lock();
                    if let Some(e) = st.procs.get_mut(&proc_id) {
                        if e.in_flight.contains_key(&tag) {
                            warn!(
                                pid = e.pid,
                                "cancelled async job did not wind down; killing its process"
                            );
                            inner.kill_and_replace(e);
                        }
                    }
                });
                false
            }
            Some(_) => {
                e.in_flight.remove(&tag);
                debug!(
                    pid = e.pid,
                    reason, "killing the Python process of an abandoned job"
                );
                self.kill_and_replace(e);
                true
            }
            None => false,
        }
    }

    /// Kills a process and starts its replacement now (a retiring process is not replaced
    /// by its supervisor).
    fn kill_and_replace(self: &Arc<Self>, e: &mut ProcEntry) {
        if !e.retiring && !self.shutdown.is_cancelled() {
            process::launch(self.clone(), None);
        }
        e.retiring = true;
        e.kill.cancel();
        self.killed.fetch_add(1, Ordering::Relaxed);
    }
}
