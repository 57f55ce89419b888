//! The execution core both sources share. A source only knows how to **claim** a job (rq:
//! one script call for many jobs; AMQP: a delivery) and how to **settle** its outcome (rq:
//! finish / fail / retry / requeue; AMQP: ack / retry queue / DLQ / reply). Everything in
//! between is here, once:
//!
//! 1. [`Budget`]: one concurrency budget for the process; a source takes a [`Slot`] before
//!    it claims, so `--concurrency` is jobs at once whatever their source.
//! 2. [`Core::spawn`] and [`Core::work`]: a claimed job is a [`UnitOfWork`] (rq, AMQP and the
//!    in-process memory source each implement it); it runs as its own task, in a `job`
//!    tracing span, holding its slot until settled: ready, execute, [`decide()`], apply.
//! 3. [`Core::execute`]: handler lookup (fallback included), time limit, panic capture,
//!    stop requests, shutdown interruption, and the metrics every source reports the same
//!    way (started / finished / failed, duration; retried and dead-lettered are counted by
//!    [`Labels`] once the source has recorded them).
//! 4. [`decide()`]: what the outcome means (finish, retry after a delay, dead letter, stopped,
//!    give back, drop) as a pure function of the outcome, the job's retry plan and its
//!    fence; each source only writes the [`Action`].
//! 5. [`Core::drain`]: at shutdown, running jobs get `--shutdown-grace-secs`; then every
//!    execution still running is interrupted with [`Interrupt::Shutdown`] and its source
//!    gives it back (rq: head of its queue; AMQP: nack with requeue).

mod budget;
pub mod decide;
pub mod observe;
mod source;
mod unit;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

pub use budget::{Budget, Slot};
pub use decide::{decide, Action, DeadReason, Fence, RetryPlan};
pub use observe::{AttemptRecord, AttemptSink, AttemptStatus, Observer};
pub use source::Source;
pub use unit::{Ready, UnitOfWork};

use crate::handler::{HandlerError, JobContext, Output, Registry};
use crate::metrics::{self as m, Health};

/// Why a running execution was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Stopped on request (rq's stop-job / kill-horse commands): a final outcome.
    Stop,
    /// Shutdown grace ran out: the source gives the job back, no attempt spent.
    Shutdown,
}

/// How an execution ended.
#[derive(Debug)]
pub enum Outcome {
    /// The handler returned.
    Done(Output),
    /// The handler failed, panicked, timed out, or no handler serves the function.
    Failed(HandlerError),
    /// Cut short before it ended.
    Interrupted(Interrupt),
}

/// An outcome and how long the execution ran.
#[derive(Debug)]
pub struct Executed {
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time in the handler.
    pub elapsed: Duration,
    /// The job's rq callback for this outcome ran in the handler (a Python pool): the
    /// job's record must not say it was not run.
    pub callbacks_run: bool,
}

/// Metric labels of one job, the same on every source.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Where it came from.
    pub source: Source,
    /// Queue (lane) it came from.
    pub queue: String,
    /// Function it names (`<malformed>`, `<undecodable>` when unreadable).
    pub function: String,
}

impl Labels {
    /// Labels for a job.
    pub fn new(source: Source, queue: impl Into<String>, function: impl Into<String>) -> Self {
        Labels {
            source,
            queue: queue.into(),
            function: function.into(),
        }
    }

    fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("source", self.source.as_str().to_string()),
            ("queue", self.queue.clone()),
            ("function", self.function.clone()),
        ]
    }

    /// Counts a failure given another attempt (after the source recorded the retry).
    pub fn retried(&self) {
        metrics::counter!(m::JOBS_RETRIED, &self.pairs()).increment(1);
    }

    /// Counts a job out of attempts (after the source really dead-lettered it).
    pub fn dead_lettered(&self) {
        metrics::counter!(m::JOBS_DEAD_LETTERED, &self.pairs()).increment(1);
    }

    /// Counts a job that could not even be read (it starts and fails at once).
    pub fn rejected(&self) {
        metrics::counter!(m::JOBS_STARTED, &self.pairs()).increment(1);
        metrics::counter!(m::JOBS_FAILED, &self.pairs()).increment(1);
    }
}

/// The shared core: handlers, budget, health, and the shutdown deadline.
pub struct Core {
    registry: Arc<Registry>,
    budget: Budget,
    health: Arc<Health>,
    /// Cancelled when the shutdown grace runs out: running executions are interrupted.
    deadline: CancellationToken,
    /// Where attempt records go (the job history); none: no record is built.
    observer: Option<Observer>,
}

impl Core {
    /// A core running `registry`'s handlers within `budget`.
    pub fn new(registry: Arc<Registry>, budget: Budget, health: Arc<Health>) -> Arc<Self> {
        Self::observed(registry, budget, health, None)
    }

    /// A core that hands a record of every settled attempt to `observer` (if any).
    pub fn observed(
        registry: Arc<Registry>,
        budget: Budget,
        health: Arc<Health>,
        observer: Option<Observer>,
    ) -> Arc<Self> {
        Arc::new(Core {
            registry,
            budget,
            health,
            deadline: CancellationToken::new(),
            observer,
        })
    }

    /// Where attempt records go, if anywhere.
    pub fn observer(&self) -> Option<&Observer> {
        self.observer.as_ref()
    }

    /// The process-wide concurrency budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Liveness and readiness flags.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The handlers.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Runs one unit of work (execute, then settle) as its own task in a `job` span; it
    /// counts in the in-flight gauge (same meaning on every source: claimed and not yet
    /// settled) and the slot is given back once the unit ends.
    pub fn spawn<F>(&self, slot: Slot, source: Source, job_id: &str, queue: &str, unit: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span =
            tracing::info_span!("job", source = source.as_str(), job_id = %job_id, queue = %queue);
        let source = source.as_str();
        metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => source).increment(1.0);
        tokio::spawn(
            async move {
                unit.await;
                metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => source).decrement(1.0);
                drop(slot);
            }
            .instrument(span),
        );
    }

    /// Runs the handler for `ctx` under `timeout`, until it ends, panics, times out, is
    /// stopped through `stop`, or the shutdown grace runs out.
    pub async fn execute(
        &self,
        ctx: JobContext,
        timeout: Option<Duration>,
        stop: Option<&CancellationToken>,
    ) -> Executed {
        let labels = Labels::new(ctx.source, ctx.queue.clone(), ctx.function.clone());
        let pairs = labels.pairs();
        metrics::counter!(m::JOBS_STARTED, &pairs).increment(1);
        let Some(handler) = self.registry.get(&ctx.function) else {
            metrics::counter!(m::JOBS_FAILED, &pairs).increment(1);
            return Executed {
                outcome: Outcome::Failed(self.registry.unknown(&ctx.function)),
                elapsed: Duration::ZERO,
                callbacks_run: false,
            };
        };
        let started = Instant::now();
        // A handler that owns its timeout (the Python pool) starts its clock when the job
        // really starts; a timer here would also count the wait for a Python process.
        let timeout = timeout.filter(|_| !handler.owns_timeout());
        let task = tokio::spawn(handler.call(ctx).in_current_span());
        let abort = task.abort_handle();
        let never = CancellationToken::new();
        let stop = stop.unwrap_or(&never);
        let outcome = tokio::select! {
            joined = async {
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, task).await.ok(),
                    None => Some(task.await),
                }
            } => match joined {
                Some(Ok(Ok(v))) => Outcome::Done(v),
                Some(Ok(Err(e))) => Outcome::Failed(e),
                Some(Err(join)) => Outcome::Failed(HandlerError::retryable(
                    "HandlerPanic",
                    format!("handler panicked: {}", panic_message(join)),
                )),
                None => Outcome::Failed(HandlerError::retryable(
                    "JobTimeoutException",
                    format!(
                        "Task exceeded maximum timeout value ({} seconds)",
                        timeout.map_or(0, |t| t.as_secs())
                    ),
                )),
            },
            _ = stop.cancelled() => Outcome::Interrupted(Interrupt::Stop),
            _ = self.deadline.cancelled() => Outcome::Interrupted(Interrupt::Shutdown),
        };
        abort.abort();
        let elapsed = started.elapsed();
        metrics::histogram!(m::JOB_DURATION, &pairs).record(elapsed.as_secs_f64());
        match &outcome {
            Outcome::Done(_) => metrics::counter!(m::JOBS_FINISHED, &pairs).increment(1),
            Outcome::Failed(_) | Outcome::Interrupted(Interrupt::Stop) => {
                metrics::counter!(m::JOBS_FAILED, &pairs).increment(1)
            }
            Outcome::Interrupted(Interrupt::Shutdown) => {}
        }
        let callbacks_run = match &outcome {
            Outcome::Failed(e) => e.callbacks_run,
            Outcome::Done(_) | Outcome::Interrupted(Interrupt::Stop) => handler.runs_callbacks(),
            Outcome::Interrupted(Interrupt::Shutdown) => false,
        };
        Executed {
            outcome,
            elapsed,
            callbacks_run,
        }
    }

    /// Starts [`Core::drain`] once `shutdown` is cancelled.
    pub fn drain_on(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            core.drain(grace).await;
        })
    }

    /// Shutdown: lets running jobs end within `grace`, then interrupts the rest (their
    /// sources give them back) and waits up to 10 s more for them to be settled.
    pub async fn drain(&self, grace: Duration) {
        self.health.set_draining();
        if tokio::time::timeout(grace, self.budget.wait_idle())
            .await
            .is_ok()
        {
            return;
        }
        warn!(
            running = self.budget.held(),
            grace_secs = grace.as_secs(),
            "shutdown grace expired; giving running jobs back to their sources"
        );
        self.deadline.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.budget.wait_idle()).await;
    }
}

/// The panic message of a handler task, for the failure record.
fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}
