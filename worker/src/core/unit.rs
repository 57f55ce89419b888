//! One shape for a claimed job, whatever its source (Sidekiq's `UnitOfWork`, River's work
//! unit): the source claims it, the core runs it, the decision says what to do, the source
//! applies that. A source implements this trait and calls [`Core::work`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use chrono::Utc;

use super::observe::{self, Started};
use super::{decide, Action, Core, Executed, Fence, Labels, Outcome, RetryPlan, Source};
use crate::handler::{HandlerError, JobContext};
use crate::telemetry::span::{self, Producer};

/// A job ready to run: its context and the time limit the core enforces.
pub struct Ready {
    /// What the handler is given.
    pub ctx: JobContext,
    /// The execution's time limit, if any.
    pub timeout: Option<Duration>,
    /// Cancelled to stop the execution on request (rq's stop-job command).
    pub stop: Option<CancellationToken>,
    /// The producer's trace context and enqueue time, for the attempt's span.
    pub producer: Producer,
}

/// A claimed job of some source.
pub trait UnitOfWork: Send + Sized + 'static {
    /// Where it came from.
    fn source(&self) -> Source;
    /// The queue it was claimed from.
    fn queue(&self) -> &str;
    /// Its id, if known even when it cannot be decoded (for the attempt record).
    fn job_id(&self) -> Option<&str> {
        None
    }
    /// The `function` label of a job that cannot be read.
    fn rejected_function(&self) -> &'static str {
        "<undecodable>"
    }
    /// Decodes the job; an error is a job that cannot even be read (never retried).
    fn ready(&mut self) -> Result<Ready, HandlerError>;
    /// Its retry budget, as the source records it.
    fn retry_plan(&self) -> RetryPlan;
    /// Whether the execution still owns the job (default: the write checks atomically).
    fn fence(&self) -> Fence {
        Fence::Held
    }
    /// Writes the decision (record, retry, dead letter, give back, or nothing).
    fn apply(self, executed: Executed, action: Action) -> impl Future<Output = ()> + Send;
}

impl Core {
    /// Runs one unit: decode, execute, decide, apply; the execution and the settling run
    /// in the attempt's `process` span (see [`crate::telemetry::span`]). With an observer,
    /// the attempt's record is handed to it once decided, before the source writes it.
    pub async fn work<U: UnitOfWork>(&self, mut unit: U) {
        let (executed, span, started) = match unit.ready() {
            Ok(ready) => {
                let span = span::process_span(&ready.ctx, &ready.producer);
                let started = self.observer.as_ref().map(|_| Started {
                    job_id: ready.ctx.id.clone(),
                    source: ready.ctx.source,
                    queue: ready.ctx.queue.clone(),
                    function: ready.ctx.function.clone(),
                    attempt: ready.ctx.attempt,
                    enqueued_at: ready.producer.enqueued_at,
                    started_at: Utc::now(),
                    args_summary: Some(observe::args_summary(
                        &ready.ctx.args,
                        &ready.ctx.kwargs,
                        observe::ARGS_SUMMARY_MAX,
                    )),
                });
                let executed = self
                    .execute(ready.ctx, ready.timeout, ready.stop.as_ref())
                    .instrument(span.clone())
                    .await;
                (executed, span, started)
            }
            Err(err) => {
                Labels::new(unit.source(), unit.queue(), unit.rejected_function()).rejected();
                let executed = Executed {
                    outcome: Outcome::Failed(err),
                    elapsed: Duration::ZERO,
                    callbacks_run: false,
                };
                let started = self.observer.as_ref().map(|_| Started {
                    job_id: unit.job_id().unwrap_or("<unknown>").to_string(),
                    source: unit.source(),
                    queue: unit.queue().to_string(),
                    function: unit.rejected_function().to_string(),
                    attempt: 1,
                    enqueued_at: None,
                    started_at: Utc::now(),
                    args_summary: None,
                });
                (executed, tracing::Span::none(), started)
            }
        };
        let action = decide(&executed.outcome, &unit.retry_plan(), unit.fence());
        span::record(&span, &executed, &action);
        if let (Some(observer), Some(started)) = (&self.observer, started) {
            let rec = started.finish(
                observer.worker().clone(),
                &executed,
                &action,
                Utc::now(),
                span::trace_id(&span),
            );
            observer.record(rec);
        }
        unit.apply(executed, action).instrument(span).await;
    }
}
