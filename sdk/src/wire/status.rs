//! Job statuses, spelled as rq's `JobStatus` enum values.

use std::fmt;
use std::str::FromStr;

/// A job's `status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Created but not yet enqueued (rq's fallback for hashes without status).
    Created,
    /// Waiting in its queue list.
    Queued,
    /// Claimed by a worker and running.
    Started,
    /// Done; its result is in `rq:results:<id>`.
    Finished,
    /// Failed for good; it is in the failed registry.
    Failed,
    /// Waiting for its dependencies.
    Deferred,
    /// Waiting for its time in the scheduled registry.
    Scheduled,
    /// Stopped on request (`send_stop_job_command`).
    Stopped,
    /// Canceled before it ran.
    Canceled,
    /// rq 3.0: waiting for a slot of its `RateLimit` (`rq:rl:<key>:rate_limited`).
    RateLimited,
    /// rq 3.0: dependencies met, about to be queued (`rq:ready:<queue>`).
    ReadyToEnqueue,
}

impl JobStatus {
    /// The exact string rq stores.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Deferred => "deferred",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Stopped => "stopped",
            JobStatus::Canceled => "canceled",
            JobStatus::RateLimited => "rate_limited",
            JobStatus::ReadyToEnqueue => "ready_to_enqueue",
        }
    }

    /// Whether the job will not change state again on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Stopped | JobStatus::Canceled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string rq never writes.
#[derive(Debug, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "created" => JobStatus::Created,
            "queued" => JobStatus::Queued,
            "started" => JobStatus::Started,
            "finished" => JobStatus::Finished,
            "failed" => JobStatus::Failed,
            "deferred" => JobStatus::Deferred,
            "scheduled" => JobStatus::Scheduled,
            "stopped" => JobStatus::Stopped,
            "canceled" => JobStatus::Canceled,
            "rate_limited" => JobStatus::RateLimited,
            "ready_to_enqueue" => JobStatus::ReadyToEnqueue,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }
}
