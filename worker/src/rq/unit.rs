//! The unit of work of one rq job (Sidekiq's `processor.rb` role): decode the job, run it
//! through the core with its stop token and meta writer, then settle the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mindora_sdk::wire::{self, job::field};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::meta::MetaWriter;
use super::store::Claimed;
use super::{RqSource, Running, SOURCE};
use crate::core::{Interrupt, Labels, Outcome};
use crate::handler::{HandlerError, JobContext, ProgressFn, RawJob};

impl RqSource {
    /// Runs one claimed job and records its outcome.
    pub(super) async fn run_unit(self: Arc<Self>, job: Claimed) {
        let decoded = job.hash.call().or_else(|e| {
            crate::python::peek::fallback_call(self.core.registry(), &job.hash).ok_or(e)
        });
        let (serializer, call) = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                let labels = Labels::new(SOURCE, job.queue.clone(), "<undecodable>");
                labels.rejected();
                let err = HandlerError::permanent(
                    "DeserializationError",
                    format!("cannot decode job data: {e}"),
                );
                self.settle_failure(&job, &labels, err, None, Duration::ZERO)
                    .await;
                return;
            }
        };
        let labels = Labels::new(SOURCE, job.queue.clone(), call.function.clone());
        for callback in [
            field::SUCCESS_CALLBACK_NAME,
            field::FAILURE_CALLBACK_NAME,
            field::STOPPED_CALLBACK_NAME,
        ] {
            // Functions no built-in serves go to the fallback (the Python pool runs them).
            let built_in = self
                .core
                .registry()
                .names()
                .contains(&call.function.as_str());
            if let Some(name) = job.hash.text(callback).filter(|_| built_in) {
                warn!(
                    callback,
                    name, "rq callbacks name Python functions; mindora-worker does not run them"
                );
            }
        }
        let timeout_secs = job
            .hash
            .timeout_secs()
            .unwrap_or(wire::DEFAULT_JOB_TIMEOUT_SECS);
        let limit = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let stop = CancellationToken::new();
        self.running().insert(
            job.exec_id.clone(),
            Running {
                job_id: job.job_id.clone(),
                queue: job.queue.clone(),
                exec_id: job.exec_id.clone(),
                timeout_secs,
                started: Instant::now(),
                stop: stop.clone(),
            },
        );
        info!(function = %call.function, "job started");

        let meta = Arc::new(MetaWriter::new(self.store.clone(), &job.hash, serializer));
        let progress: ProgressFn = {
            let w = meta.clone();
            Arc::new(move |update| w.report(update))
        };
        let raw = RawJob {
            data: job
                .hash
                .raw(field::DATA)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            serializer: Some(serializer),
            description: job.hash.text(field::DESCRIPTION).map(str::to_string),
            timeout: limit,
        };
        let ctx = JobContext::new(
            job.job_id.clone(),
            job.queue.clone(),
            SOURCE,
            call.function.clone(),
            call.args,
            call.kwargs,
            attempt_number(&job),
            Some(progress),
        )
        .with_raw(raw);
        let executed = self.core.execute(ctx, limit, Some(&stop)).await;
        // rq saves meta before the status: every progress write lands first.
        meta.flush().await;
        match executed.outcome {
            Outcome::Done(output) => {
                self.settle_success(&job, &labels, serializer, output, executed.callbacks_run)
                    .await;
                info!(function = %labels.function, ms = executed.elapsed.as_millis() as u64, "job finished");
            }
            Outcome::Failed(err) => {
                self.settle_failure(&job, &labels, err, None, executed.elapsed)
                    .await
            }
            Outcome::Interrupted(Interrupt::Stop) => {
                let mut err = HandlerError::permanent("StopRequested", "job stopped by request");
                err.callbacks_run = executed.callbacks_run;
                self.settle_failure(&job, &labels, err, Some(Interrupt::Stop), executed.elapsed)
                    .await
            }
            Outcome::Interrupted(Interrupt::Shutdown) => self.settle_requeue(&job).await,
        }
        self.running().remove(&job.exec_id);
    }

    /// The oldest running job, shown as the worker's `current_job`.
    pub(super) fn current_job(&self) -> Option<String> {
        self.running()
            .values()
            .min_by_key(|r| r.started)
            .map(|r| r.job_id.clone())
    }
}

/// Attempt = retries used + 1. rq's `Retry` stores no total, so only jobs with mindora's
/// policy know theirs; other jobs report attempt 1.
fn attempt_number(job: &Claimed) -> u32 {
    match (job.hash.mindora_retry(), job.hash.retries_left()) {
        (Some(policy), Some(left)) => (i64::from(policy.retries()) - left).max(0) as u32 + 1,
        _ => 1,
    }
}
