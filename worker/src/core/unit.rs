//! One shape for a claimed job, whatever its source (Sidekiq's `UnitOfWork`, River's work
//! unit): the source claims it, the core runs it, the decision says what to do, the source
//! applies that. A source implements this trait and calls [`Core::work`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{decide, Action, Core, Executed, Fence, Labels, Outcome, RetryPlan, Source};
use crate::handler::{HandlerError, JobContext};

/// A job ready to run: its context and the time limit the core enforces.
pub struct Ready {
    /// What the handler is given.
    pub ctx: JobContext,
    /// The execution's time limit, if any.
    pub timeout: Option<Duration>,
    /// Cancelled to stop the execution on request (rq's stop-job command).
    pub stop: Option<CancellationToken>,
}

/// A claimed job of some source.
pub trait UnitOfWork: Send + Sized + 'static {
    /// Where it came from.
    fn source(&self) -> Source;
    /// The queue it was claimed from.
    fn queue(&self) -> &str;
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
    /// Runs one unit: decode, execute, decide, apply.
    pub async fn work<U: UnitOfWork>(&self, mut unit: U) {
        let executed = match unit.ready() {
            Ok(ready) => {
                self.execute(ready.ctx, ready.timeout, ready.stop.as_ref())
                    .await
            }
            Err(err) => {
                Labels::new(unit.source(), unit.queue(), unit.rejected_function()).rejected();
                Executed {
                    outcome: Outcome::Failed(err),
                    elapsed: Duration::ZERO,
                    callbacks_run: false,
                }
            }
        };
        let action = decide(&executed.outcome, &unit.retry_plan(), unit.fence());
        unit.apply(executed, action).await;
    }
}
