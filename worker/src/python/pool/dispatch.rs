//! Job dispatch: choosing a process for a request (bounded by `--python-wait-secs`),
//! sending it, waiting for its outcome or its timeout (which starts when a process takes
//! the request), the guard that abandons a dropped request, and the failure / stopped
//! callbacks run in another process.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use crate::metrics as m;
use crate::python::protocol::{encode, ToRunner};
use crate::python::{FailureKind, PyJob, PyOutcome};

use super::supervision::CANCEL_GRACE;
use super::{Event, ExitReason, InFlight, Inner, Mode, PythonPool};

/// rq's timeout message (`rq.timeouts.JobTimeoutException`'s text in rq's death penalty).
pub(crate) fn timeout_message(secs: u64) -> String {
    format!("Task exceeded maximum timeout value ({secs} seconds)")
}

impl PythonPool {
    /// Runs one job to its outcome. Its timeout counts from when a process takes it; the
    /// wait for a free process is bounded by the pool's `wait`. Dropping the future (a stop
    /// command, shutdown) kills the job's process or cancels its task; the worker never
    /// waits on a stuck job.
    pub async fn run(&self, job: PyJob) -> PyOutcome {
        let timeout = job.timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        let msg = |tag| ToRunner::Job {
            tag,
            id: job.id.clone(),
            origin: job.origin.clone(),
            serializer: self.inner.cfg.serializer.clone(),
            timeout,
            trace: job.trace.clone(),
        };
        let limit = job.timeout.map(|_| Duration::from_secs(timeout));
        match self.dispatch(&job.id, msg, limit, timeout).await {
            Ok(PyOutcome::Failed(f)) if f.kind == FailureKind::ProcessDied => {
                self.spawn_late_callback(&job.id, "ProcessDied", f.exc_string.clone());
                PyOutcome::Failed(f)
            }
            Ok(outcome) => outcome,
            Err(Timeout { cancelled }) => {
                // Its process is gone: the failure callback runs in another one.
                self.spawn_late_callback(&job.id, "JobTimeoutException", timeout_message(timeout));
                let how = if cancelled {
                    "an async def job: its task was cancelled but did not wind down, so its process was killed and replaced"
                } else {
                    "its process was killed and replaced"
                };
                PyOutcome::failed(
                    FailureKind::Timeout,
                    "JobTimeoutException",
                    format!(
                        "Traceback (most recent call last):\n  mindora-worker ended job {} at its timeout ({how})\nrq.timeouts.JobTimeoutException: {}\n",
                        job.id,
                        timeout_message(timeout)
                    ),
                )
            }
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
            match this
                .dispatch(&id, msg, Some(Duration::from_secs(60)), 0)
                .await
            {
                Ok(PyOutcome::Failed(f)) => {
                    warn!(job_id = %id, kind, error = %f.summary(), "callback failed")
                }
                Ok(PyOutcome::Returned(_)) => {}
                Err(Timeout { .. }) => {
                    warn!(job_id = %id, kind, "callback ran past its timeout; its process was killed and replaced")
                }
            }
        });
    }

    /// Waits for a process, sends the request, waits for its outcome or `limit` (counted
    /// from when the process takes it). At the limit a plain function's process is killed
    /// (`Err`); an `async def` job is cancelled and its own `JobTimeoutException` (its
    /// `on_failure` run by the same process) is awaited for a grace period.
    async fn dispatch(
        &self,
        job_id: &str,
        msg: impl Fn(u64) -> ToRunner,
        limit: Option<Duration>,
        timeout_secs: u64,
    ) -> Result<PyOutcome, Timeout> {
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let (events, mut rx) = mpsc::unbounded_channel();
        let is_job = matches!(msg(0), ToRunner::Job { .. });
        // A job stopped while it waits for a process (e.g. one being recycled) never reaches
        // the `Abandon` guard below, but its `on_stopped` callback is owed all the same.
        let mut waiting = Waiting {
            pool: self,
            job_id,
            armed: is_job,
        };
        let waiting_since = Instant::now();
        // Only jobs give up waiting: a callback owed for a killed process waits for one.
        let wait = self.inner.cfg.wait.filter(|_| is_job);
        let acquired = self.inner.acquire(tag, job_id, events, wait).await;
        waiting.armed = false;
        let proc_id = match acquired {
            Acquired::Proc(id) => id,
            Acquired::Unavailable => {
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
            }
            Acquired::WaitedTooLong => {
                self.inner.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::PYTHON_WAIT_TIMEOUTS).increment(1);
                let waited = waiting_since.elapsed().as_secs_f64();
                let processes = self.inner.cfg.processes;
                warn!(job_id, waited_secs = waited, processes, "no Python process became free in time (--python-wait-secs); the job did not start");
                return Ok(PyOutcome::failed(
                    FailureKind::WaitTimeout,
                    "PythonProcessWaitTimeout",
                    format!(
                        "Traceback (most recent call last):\n  mindora-worker: job {job_id} was never started\nPythonProcessWaitTimeout: job {job_id} waited {waited:.1} s for a free Python process (limit --python-wait-secs / MINDORA_PYTHON_WAIT_SECS); all {processes} processes stayed busy\n"
                    ),
                ));
            }
        };
        if is_job {
            metrics::histogram!(m::PYTHON_WAIT).record(waiting_since.elapsed().as_secs_f64());
        }
        let mut guard = Abandon {
            pool: self.clone(),
            job_id: job_id.to_string(),
            proc_id,
            tag,
            armed: true,
            deadline: limit.map(|l| tokio::time::Instant::now() + l),
            is_job,
            timeout_secs,
            cancelled: false,
        };
        self.inner.send_frame(proc_id, &msg(tag));
        loop {
            let ev = match guard.deadline {
                Some(d) => tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::time::sleep_until(d) => {
                        if guard.cancelled {
                            // The cancelled task did not wind down: the supervisor kills
                            // its process (CANCEL_GRACE); the callback runs elsewhere.
                            guard.armed = false;
                            return Err(Timeout { cancelled: true });
                        }
                        let why = if is_job { ExitReason::Timeout } else { ExitReason::CallbackTimeout };
                        if self.inner.abandon(proc_id, tag, why) {
                            if is_job {
                                warn!(job_id, timeout_secs, "Python job ran past its timeout; its process was killed and replaced");
                            }
                            guard.armed = false;
                            return Err(Timeout { cancelled: false });
                        }
                        warn!(job_id, timeout_secs, "async def Python job ran past its timeout; its task was cancelled (its process carries on)");
                        guard.cancelled = true;
                        guard.deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE + Duration::from_secs(1));
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match ev {
                Some(Event::Phase(secs)) if !guard.cancelled => {
                    guard.deadline =
                        Some(tokio::time::Instant::now() + Duration::from_secs(secs.max(1) + 1));
                }
                Some(Event::Phase(_)) => {}
                Some(Event::Done(mut outcome)) => {
                    guard.armed = false;
                    if let PyOutcome::Failed(f) = &mut outcome {
                        if guard.cancelled && f.exc_type == "JobTimeoutException" {
                            f.kind = FailureKind::Timeout;
                        }
                    }
                    return Ok(outcome);
                }
                None if guard.cancelled => {
                    guard.armed = false;
                    return Err(Timeout { cancelled: true });
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

/// A request's process was killed at its timeout (for a cancelled `async def` job: after
/// it did not wind down); the failure callback is owed in another process.
struct Timeout {
    cancelled: bool,
}

/// What waiting for a process gave.
pub(super) enum Acquired {
    /// This process took the request.
    Proc(u64),
    /// None can start, or the pool shuts down.
    Unavailable,
    /// None became free within the pool's `wait`.
    WaitedTooLong,
}

/// A job dropped while waiting for a process: nothing ran, but a stop command is owed its
/// `on_stopped` callback (run once rq's status reads `stopped`, as for a running job).
struct Waiting<'a> {
    pool: &'a PythonPool,
    job_id: &'a str,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.spawn_stopped_callback(self.job_id);
        }
    }
}

/// Dropped before the outcome (a stop command, shutdown, an embedder's own timer): the job
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
    timeout_secs: u64,
    /// An `async def` job already cancelled at its timeout.
    cancelled: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.cancelled {
            self.pool
                .inner
                .abandon(self.proc_id, self.tag, ExitReason::Timeout);
            return;
        }
        let timed_out = self
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() + Duration::from_millis(100) >= d);
        let why = if timed_out && self.is_job {
            ExitReason::Timeout
        } else {
            ExitReason::Stopped
        };
        let killed = self.pool.inner.abandon(self.proc_id, self.tag, why);
        if self.is_job && timed_out && killed {
            self.pool.spawn_late_callback(
                &self.job_id,
                "JobTimeoutException",
                timeout_message(self.timeout_secs),
            );
        } else if self.is_job && !timed_out {
            self.pool.spawn_stopped_callback(&self.job_id);
        }
    }
}

impl Inner {
    /// Reserves a process for `tag`, waiting at most `wait`.
    async fn acquire(
        &self,
        tag: u64,
        job_id: &str,
        events: mpsc::UnboundedSender<Event>,
        wait: Option<Duration>,
    ) -> Acquired {
        let waiting_since = Instant::now();
        let give_up = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if self.shutdown.is_cancelled() {
                    return Acquired::Unavailable;
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
                        st.publish();
                        return Acquired::Proc(id);
                    }
                }
                if st.procs.is_empty()
                    && st.last_start_error.is_some()
                    && waiting_since.elapsed() > self.cfg.start_timeout
                {
                    return Acquired::Unavailable;
                }
            }
            if give_up.is_some_and(|t| tokio::time::Instant::now() >= t) {
                return Acquired::WaitedTooLong;
            }
            let tick = tokio::time::Instant::now() + Duration::from_secs(1);
            let wake = give_up.map_or(tick, |t| t.min(tick));
            tokio::select! {
                _ = notified => {},
                _ = tokio::time::sleep_until(wake) => {},
                _ = self.shutdown.cancelled() => return Acquired::Unavailable,
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
}
