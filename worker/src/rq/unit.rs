//! The unit of work of one rq job (Sidekiq's `processor.rb` role), in the core's one shape
//! ([`UnitOfWork`]): decode the job and register its stop token and meta writer, let the core
//! run it and decide, then write the decision through the settle functions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mindora_sdk::wire::{self, job::field, Serializer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::meta::MetaWriter;
use super::settle::stale_outcome;
use super::store::Claimed;
use super::{RqSource, Running, SOURCE};
use crate::core::{Action, Executed, Labels, Outcome, Ready, RetryPlan, Source, UnitOfWork};
use crate::handler::{HandlerError, JobContext, ProgressFn, RawJob};
use crate::telemetry::span::Producer;

/// One claimed rq job.
pub(super) struct RqUnit {
    source: Arc<RqSource>,
    job: Claimed,
    /// Set once the job is decoded and registered as running.
    started: Option<Started>,
}

struct Started {
    serializer: Serializer,
    labels: Labels,
    meta: Arc<MetaWriter>,
}

impl RqUnit {
    pub(super) fn new(source: Arc<RqSource>, job: Claimed) -> Self {
        RqUnit {
            source,
            job,
            started: None,
        }
    }

    /// rq's callbacks name Python functions; only the Python pool (the fallback) runs them.
    fn warn_callbacks_of_built_ins(&self, function: &str) {
        let built_in = self.source.core.registry().names().contains(&function);
        for callback in [
            field::SUCCESS_CALLBACK_NAME,
            field::FAILURE_CALLBACK_NAME,
            field::STOPPED_CALLBACK_NAME,
        ] {
            if let Some(name) = self.job.hash.text(callback).filter(|_| built_in) {
                warn!(
                    callback,
                    name, "rq callbacks name Python functions; mindora-worker does not run them"
                );
            }
        }
    }
}

impl UnitOfWork for RqUnit {
    fn source(&self) -> Source {
        SOURCE
    }

    fn queue(&self) -> &str {
        &self.job.queue
    }

    fn job_id(&self) -> Option<&str> {
        Some(&self.job.job_id)
    }

    fn ready(&mut self) -> Result<Ready, HandlerError> {
        let job = &self.job;
        let decoded = job.hash.call().or_else(|e| {
            crate::python::peek::fallback_call(self.source.core.registry(), &job.hash).ok_or(e)
        });
        let (serializer, call) = decoded.map_err(|e| {
            HandlerError::permanent(
                "DeserializationError",
                format!("cannot decode job data: {e}"),
            )
        })?;
        self.warn_callbacks_of_built_ins(&call.function);
        let job = &self.job;
        let timeout_secs = job
            .hash
            .timeout_secs()
            .unwrap_or(wire::DEFAULT_JOB_TIMEOUT_SECS);
        let limit = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let stop = CancellationToken::new();
        self.source.running().insert(
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
        let meta = Arc::new(MetaWriter::new(
            self.source.store.clone(),
            &job.hash,
            serializer,
        ));
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
            attempt_number(job),
            Some(progress),
        )
        .with_raw(raw);
        self.started = Some(Started {
            serializer,
            labels: Labels::new(SOURCE, job.queue.clone(), call.function),
            meta,
        });
        // Reading meta costs a decode (pickle), so only a traced process pays it; the
        // enqueue time (a short text parse) also serves the job history.
        let producer = Producer {
            carrier: if crate::telemetry::enabled() {
                wire::trace::carrier_from_meta(&job.hash.meta(serializer))
            } else {
                Default::default()
            },
            enqueued_at: job.hash.enqueued_at(),
        };
        Ok(Ready {
            ctx,
            timeout: limit,
            stop: Some(stop),
            producer,
        })
    }

    fn retry_plan(&self) -> RetryPlan {
        self.source.retry_plan(&self.job)
    }

    async fn apply(self, executed: Executed, action: Action) {
        let RqUnit {
            source,
            job,
            started,
        } = self;
        let Some(started) = started else {
            // Undecodable: failed at once, never retried.
            let labels = Labels::new(SOURCE, job.queue.clone(), "<undecodable>");
            if let Outcome::Failed(err) = executed.outcome {
                source
                    .record_failure(&job, &labels, err, action, Duration::ZERO)
                    .await;
            }
            return;
        };
        // rq saves meta before the status: every progress write lands first.
        started.meta.flush().await;
        let labels = &started.labels;
        match (action, executed.outcome) {
            (Action::Finish, Outcome::Done(output)) => {
                source
                    .settle_success(
                        &job,
                        labels,
                        started.serializer,
                        output,
                        executed.callbacks_run,
                    )
                    .await;
                info!(function = %labels.function, ms = executed.elapsed.as_millis() as u64, "job finished");
            }
            (Action::GiveBack, _) => source.settle_requeue(&job).await,
            (Action::Drop, _) => stale_outcome(&job, "dropped", "the execution lost its job"),
            (action @ Action::Stopped, _) => {
                let mut err = HandlerError::permanent("StopRequested", "job stopped by request");
                err.callbacks_run = executed.callbacks_run;
                source
                    .record_failure(&job, labels, err, action, executed.elapsed)
                    .await
            }
            (action, Outcome::Failed(err)) => {
                source
                    .record_failure(&job, labels, err, action, executed.elapsed)
                    .await
            }
            // Finish is decided only for Done, Retry / DeadLetter only for Failed.
            (action, _) => warn!(?action, "settle decision does not fit the outcome"),
        }
        source.running().remove(&job.exec_id);
    }
}

impl RqSource {
    /// The oldest running job, shown as the worker's `current_job`.
    pub(super) fn current_job(&self) -> Option<String> {
        self.running()
            .values()
            .min_by_key(|r| r.started)
            .map(|r| r.job_id.clone())
    }
}

/// Attempt = retries used + 1: mindora counts the retries it schedules
/// (`mindora_retries`); rq's `Retry` stores no total, so a job retried by Python rq workers
/// only knows its number if it has mindora's policy; other jobs report attempt 1.
fn attempt_number(job: &Claimed) -> u32 {
    if let Some(done) = job.hash.mindora_retries() {
        return u32::try_from(done.max(0)).unwrap_or(u32::MAX - 1) + 1;
    }
    match (job.hash.mindora_retry(), job.hash.retries_left()) {
        (Some(policy), Some(left)) => (i64::from(policy.retries()) - left).max(0) as u32 + 1,
        _ => 1,
    }
}
