//! Job dispatch: choosing a process for a request, sending it, waiting for its outcome or
//! its timeout, the guard that abandons a dropped request, and the failure / stopped
//! callbacks run in another process.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use crate::python::protocol::{encode, ToRunner};
use crate::python::{FailureKind, PyJob, PyOutcome};

use super::{Event, InFlight, Inner, Mode, PythonPool};

impl PythonPool {
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
        let is_job = matches!(msg(0), ToRunner::Job { .. });
        // A job stopped while it waits for a process (e.g. one being recycled) never reaches
        // the `Abandon` guard below, but its `on_stopped` callback is owed all the same.
        let mut waiting = Waiting {
            pool: self,
            job_id,
            armed: is_job,
        };
        let acquired = self.inner.acquire(tag, job_id, events).await;
        waiting.armed = false;
        let Some(proc_id) = acquired else {
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
}
