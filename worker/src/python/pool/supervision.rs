//! Supervision as the pool sees it: registering and removing processes, start backoff,
//! housekeeping, frames from a runner (outcomes, and recycling after max jobs / max RSS),
//! and killing (or cancelling) an abandoned request's process and replacing it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::python::process::{self, Housekeeping};
use crate::python::protocol::{encode, FromRunner, ToRunner};
use crate::python::{FailureKind, PyOutcome};

use super::{Event, ExitReason, Inner, Mode, ProcEntry};
use crate::metrics as m;

/// An `async def` job cancelled for its timeout gets this long to wind down (its failure
/// callback runs) before its process is killed.
pub(super) const CANCEL_GRACE: Duration = Duration::from_secs(5);

impl Inner {
    pub(crate) fn register(&self, entry: ProcEntry) -> u64 {
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.procs.insert(id, entry);
            st.publish();
            id
        };
        self.changed.notify_waiters();
        id
    }

    /// Removes a dead process; returns why the pool ended it (None: it died by itself) and
    /// its orphaned requests.
    pub(crate) fn unregister(
        &self,
        id: u64,
    ) -> (
        Option<ExitReason>,
        Vec<(String, mpsc::UnboundedSender<Event>)>,
    ) {
        let entry = {
            let mut st = self.lock();
            let e = st.procs.remove(&id);
            st.publish();
            e
        };
        self.changed.notify_waiters();
        match entry {
            Some(e) => (
                e.exit_reason,
                e.in_flight
                    .into_values()
                    .filter(|f| f.mode != Mode::Cancelling)
                    .map(|f| (f.job_id, f.events))
                    .collect(),
            ),
            None => (None, Vec::new()),
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
                let why = if too_big {
                    ExitReason::MaxRss
                } else {
                    ExitReason::MaxJobs
                };
                e.retiring = true;
                e.exit_reason = Some(why);
                recycle = Some((e.pid, e.jobs, rss, why));
            }
            st.publish();
        }
        if let Some((pid, jobs, rss, why)) = recycle {
            info!(
                pid,
                jobs,
                rss_mb = rss / (1024 * 1024),
                reason = why.label(),
                "recycling a Python process ({}); starting its replacement",
                why.describe()
            );
            metrics::counter!(m::PYTHON_RECYCLES, "reason" => why.label()).increment(1);
            self.recycled.fetch_add(1, Ordering::Relaxed);
            if !self.shutdown.is_cancelled() {
                process::launch(self.clone(), None);
            }
        }
        self.changed.notify_waiters();
    }

    /// Gives up on a request. A plain function's process is killed and replaced (anything
    /// else it ran fails as a dead process); an `async def` task is cancelled (the runner
    /// runs `on_failure` for a timeout), and its process killed only if the task does not
    /// wind down. Returns whether the process was killed.
    pub(super) fn abandon(self: &Arc<Self>, proc_id: u64, tag: u64, why: ExitReason) -> bool {
        let reason = if why == ExitReason::Timeout {
            "timeout"
        } else {
            "abandoned"
        };
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
                                "cancelled async def job did not wind down; killing its process"
                            );
                            inner.kill_and_replace(e, why);
                        }
                    }
                });
                false
            }
            Some(_) => {
                e.in_flight.remove(&tag);
                debug!(
                    pid = e.pid,
                    reason = why.label(),
                    "killing the Python process of an abandoned request"
                );
                self.kill_and_replace(e, why);
                st.publish();
                true
            }
            None => false,
        }
    }

    /// Kills a process and starts its replacement now (a retiring process is not replaced
    /// by its supervisor).
    fn kill_and_replace(self: &Arc<Self>, e: &mut ProcEntry, why: ExitReason) {
        if !e.retiring && !self.shutdown.is_cancelled() {
            process::launch(self.clone(), None);
        }
        // A kill overrides a pending recycle: the log and metrics tell the real reason.
        if e.exit_reason.is_none_or(ExitReason::is_recycle) && !e.kill.is_cancelled() {
            metrics::counter!(m::PYTHON_RESTARTS, "reason" => why.label()).increment(1);
            e.exit_reason = Some(why);
        }
        e.retiring = true;
        e.kill.cancel();
        self.killed.fetch_add(1, Ordering::Relaxed);
    }
}
