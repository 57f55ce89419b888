//! Settle: the only place an rq job's outcome is written, each by one transition script
//! from `mindora_sdk::wire::scripts` (through the store): finish, fail (retry / dead
//! letter / stopped) and requeue. What to write is [`crate::core::decide`]'s, from the
//! job's retry budget ([`RqSource::retry_plan`]); this file only writes it. Writes are retried (with backoff) until Redis takes them;
//! retried / dead-lettered are counted only once recorded.

use std::time::Duration;

use backon::Retryable;
use mindora_sdk::wire::retry::rq_interval;
use mindora_sdk::wire::Serializer;
use mindora_sdk::RetryPolicy;
use tracing::{debug, error, warn};

use super::store::{Claimed, FailMode, FinishError};
use super::{RqSource, SOURCE};
use crate::backoff;
use crate::core::{decide, Action, Fence, Interrupt, Labels, Outcome, RetryPlan};
use crate::handler::{HandlerError, Output};
use crate::metrics as m;

impl RqSource {
    /// Records success (result, registries, dependents). A return value the job's
    /// serializer cannot encode turns into a failure.
    pub(super) async fn settle_success(
        &self,
        job: &Claimed,
        labels: &Labels,
        serializer: Serializer,
        output: Output,
        callbacks_run: bool,
    ) {
        let recorded = (|| self.store.finish(job, serializer, &output, callbacks_run))
            .retry(backoff::record())
            .when(FinishError::is_transient)
            .notify(|e, _| warn!(error = %e, "could not record success yet; retrying"))
            .await;
        match recorded {
            Ok(moved) if !moved.is_empty() => debug!(dependents = ?moved, "enqueued dependents"),
            Ok(_) => {}
            Err(FinishError::Codec(e)) => {
                let err = HandlerError::permanent(
                    "SerializationError",
                    format!("return value cannot be serialized: {e}"),
                );
                let labels = Labels::new(labels.source, labels.queue.clone(), "<result>");
                self.settle_failure(job, &labels, err, None, Duration::ZERO)
                    .await;
            }
            Err(FinishError::Stale(why)) => stale_outcome(job, "finished", &why),
            Err(e) => {
                error!(error = %e, "could not record success; the job will be recovered as abandoned")
            }
        }
    }

    /// Settles a failed execution (or one stopped on request): the decision
    /// ([`crate::core::decide`]) says retry, dead letter or stopped; this writes it.
    pub(super) async fn settle_failure(
        &self,
        job: &Claimed,
        labels: &Labels,
        err: HandlerError,
        interrupt: Option<Interrupt>,
        elapsed: Duration,
    ) {
        let outcome = match interrupt {
            Some(i) => Outcome::Interrupted(i),
            None => Outcome::Failed(err.clone()),
        };
        let action = decide(&outcome, &self.retry_plan(job), Fence::Held);
        self.record_failure(job, labels, err, action, elapsed).await
    }

    /// Writes a failure the decision already settled (retry, dead letter or stopped).
    pub(super) async fn record_failure(
        &self,
        job: &Claimed,
        labels: &Labels,
        err: HandlerError,
        action: Action,
        elapsed: Duration,
    ) {
        let mode = match action {
            Action::Retry { delay_secs, adopt } => {
                self.retry_mode(job, delay_secs, adopt.as_ref()).await
            }
            Action::Stopped => FailMode::Stopped,
            Action::DeadLetter(_) => FailMode::Failed,
            // Not reachable from a failure; dead-lettering keeps the error on record.
            Action::Finish | Action::GiveBack | Action::Drop => FailMode::Failed,
        };
        let exc = err.exc_string.clone().unwrap_or_else(|| {
            format!(
                "Traceback (most recent call last):\n  mindora-worker {} running {} on queue {} (job {}, {:.3}s)\n{}: {}\n",
                self.store.worker(),
                labels.function,
                job.queue,
                job.job_id,
                elapsed.as_secs_f64(),
                err.kind,
                err.message
            )
        });
        let recorded = (|| self.store.fail(job, mode, &exc, err.callbacks_run))
            .retry(backoff::record())
            .when(FinishError::is_transient)
            .notify(|e, _| warn!(error = %e, "could not record failure yet; retrying"))
            .await;
        let function = labels.function.as_str();
        match recorded {
            Ok(status) => match mode {
                FailMode::Retry { delay_secs } => {
                    labels.retried();
                    warn!(function, error = %err, delay_secs, status = %status, "job failed; retrying");
                }
                FailMode::Failed => {
                    labels.dead_lettered();
                    error!(function, error = %err, "job failed; moved to the failed registry");
                }
                FailMode::Stopped => warn!(function, "job stopped"),
            },
            Err(FinishError::Stale(why)) => stale_outcome(job, "failed", &why),
            Err(e) => {
                error!(error = %e, "could not record failure; the job will be recovered as abandoned")
            }
        }
    }

    /// Shutdown grace ran out: back to the head of its queue, no attempt spent.
    pub(super) async fn settle_requeue(&self, job: &Claimed) {
        match self.store.requeue(job).await {
            Ok(_) => {
                warn!(job_id = %job.job_id, "shutdown grace expired; job returned to the head of its queue")
            }
            Err(FinishError::Stale(why)) => stale_outcome(job, "requeued", &why),
            Err(e) => {
                error!(error = %e, job_id = %job.job_id, "could not requeue at shutdown; recovery will handle it")
            }
        }
    }

    /// The job's retry budget as rq records it: `retries_left` with mindora's policy or
    /// rq's intervals, else the queue's default policy (`--retry`, `--queue-retry`).
    pub(super) fn retry_plan(&self, job: &Claimed) -> RetryPlan {
        match job.hash.retries_left() {
            Some(left) => RetryPlan::Own {
                remaining: u32::try_from(left.max(0)).unwrap_or(u32::MAX),
                delay_secs: match job.hash.mindora_retry() {
                    Some(policy) => policy.delay_secs(left),
                    None => {
                        rq_interval(&job.hash.retry_intervals().unwrap_or_default(), left) as f64
                    }
                },
            },
            None => match self.cfg.retry_defaults.for_queue(&job.queue) {
                Some(policy) => RetryPlan::QueueDefault(policy),
                None => RetryPlan::None,
            },
        }
    }

    /// A retry; a queue default policy is written into the job first (as rq's fields),
    /// and if that fails the job is dead-lettered rather than retried without a budget.
    async fn retry_mode(
        &self,
        job: &Claimed,
        delay_secs: u64,
        adopt: Option<&RetryPolicy>,
    ) -> FailMode {
        if let Some(policy) = adopt {
            if let Err(e) = self.store.adopt_retry_policy(&job.job_id, policy).await {
                warn!(error = %e, "could not attach the default retry policy");
                return FailMode::Failed;
            }
        }
        FailMode::Retry {
            delay_secs: i64::try_from(delay_secs).unwrap_or(i64::MAX),
        }
    }
}

/// Fencing refused a late outcome: the execution had been recovered after this worker's
/// lease lapsed (e.g. it was paused or cut off from Redis) and a newer execution owns the
/// job now. Nothing was written to the job; the drop is logged and counted.
pub(super) fn stale_outcome(job: &Claimed, outcome: &str, why: &str) {
    warn!(
        job_id = %job.job_id,
        queue = %job.queue,
        exec_id = %job.exec_id,
        outcome,
        reason = why,
        "late outcome of a recovered execution dropped (fencing)"
    );
    metrics::counter!(m::STALE_OUTCOMES, "source" => SOURCE.as_str(), "queue" => job.queue.clone())
        .increment(1);
}
