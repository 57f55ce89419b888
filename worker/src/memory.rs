//! An in-process job source (apalis' memory backend, River's test driver): jobs pushed into
//! memory are claimed within the core's budget, run through the same core and settled by
//! the same decision as rq and AMQP. Nothing outside the process is involved, so the core's
//! budget, drain, timeouts, retries and settle decisions are tested in milliseconds; every
//! settlement is kept for inspection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::{Action, Core, Executed, Outcome, Ready, RetryPlan, Source, UnitOfWork};
use crate::handler::{HandlerError, Output};

/// A job for the memory source.
#[derive(Debug, Clone)]
pub struct MemoryJob {
    /// Job id.
    pub id: String,
    /// Function to run.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Time limit of one attempt.
    pub timeout: Option<Duration>,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before each retry.
    pub retry_delay: Duration,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl MemoryJob {
    /// A job with one attempt, no time limit and no arguments.
    pub fn new(id: impl Into<String>, function: impl Into<String>) -> Self {
        MemoryJob {
            id: id.into(),
            function: function.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            timeout: None,
            max_attempts: 1,
            retry_delay: Duration::ZERO,
            attempt: 1,
        }
    }
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct Settled {
    /// Job id.
    pub id: String,
    /// Which attempt.
    pub attempt: u32,
    /// What the decision said.
    pub action: Action,
    /// The return value, for [`Action::Finish`].
    pub result: Option<Value>,
    /// The failure, for retries and dead letters.
    pub error: Option<HandlerError>,
}

#[derive(Default)]
struct State {
    queued: VecDeque<MemoryJob>,
    settled: Vec<Settled>,
    /// Retries waiting for their delay.
    delayed: usize,
}

/// The source: a queue in memory and the record of every settlement.
pub struct MemorySource {
    queue: String,
    state: Mutex<State>,
    wake: Notify,
}

impl MemorySource {
    /// An empty source serving queue `queue`.
    pub fn new(queue: impl Into<String>) -> Arc<Self> {
        Arc::new(MemorySource {
            queue: queue.into(),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update; the queue stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job at the tail.
    pub fn push(&self, job: MemoryJob) {
        self.state().queued.push_back(job);
        self.wake.notify_one();
    }

    /// Every settlement so far, in order.
    pub fn settled(&self) -> Vec<Settled> {
        self.state().settled.clone()
    }

    /// Jobs waiting to be claimed (retries still in their delay not included).
    pub fn queued(&self) -> usize {
        self.state().queued.len()
    }

    /// Whether nothing is queued or waiting for a retry.
    pub fn is_empty(&self) -> bool {
        let s = self.state();
        s.queued.is_empty() && s.delayed == 0
    }

    /// Claims and runs jobs until `shutdown`: one slot of the core's budget per job, as
    /// the rq and AMQP sources take theirs.
    pub async fn run(self: Arc<Self>, core: Arc<Core>, shutdown: CancellationToken) {
        loop {
            let slot = tokio::select! {
                slot = core.budget().acquire() => match slot {
                    Some(slot) => slot,
                    None => return, // the budget was closed
                },
                _ = shutdown.cancelled() => return,
            };
            let job = loop {
                let wake = self.wake.notified();
                if let Some(job) = self.state().queued.pop_front() {
                    break job;
                }
                tokio::select! {
                    _ = wake => {}
                    _ = shutdown.cancelled() => return,
                }
            };
            let unit = MemoryUnit {
                source: self.clone(),
                job,
            };
            let (id, queue, worker) = (unit.job.id.clone(), self.queue.clone(), core.clone());
            core.spawn(slot, Source::Memory, &id, &queue, async move {
                worker.work(unit).await;
            });
        }
    }

    fn record(&self, settled: Settled) {
        self.state().settled.push(settled);
    }
}

struct MemoryUnit {
    source: Arc<MemorySource>,
    job: MemoryJob,
}

impl UnitOfWork for MemoryUnit {
    fn source(&self) -> Source {
        Source::Memory
    }

    fn queue(&self) -> &str {
        &self.source.queue
    }

    fn job_id(&self) -> Option<&str> {
        Some(&self.job.id)
    }

    fn ready(&mut self) -> Result<Ready, HandlerError> {
        let ctx = crate::handler::JobContext::new(
            self.job.id.clone(),
            self.source.queue.clone(),
            Source::Memory,
            self.job.function.clone(),
            self.job.args.clone(),
            self.job.kwargs.clone(),
            self.job.attempt,
            None,
        );
        Ok(Ready {
            ctx,
            timeout: self.job.timeout,
            stop: None,
            producer: Default::default(),
        })
    }

    fn retry_plan(&self) -> RetryPlan {
        RetryPlan::Own {
            remaining: self.job.max_attempts.saturating_sub(self.job.attempt),
            delay_secs: self.job.retry_delay.as_secs_f64(),
        }
    }

    async fn apply(self, executed: Executed, action: Action) {
        let (result, error) = match executed.outcome {
            Outcome::Done(Output::Value(v)) => (Some(v), None),
            Outcome::Done(Output::Serialized(b)) => (
                Some(Value::String(String::from_utf8_lossy(&b).into_owned())),
                None,
            ),
            Outcome::Failed(e) => (None, Some(e)),
            Outcome::Interrupted(_) => (None, None),
        };
        let MemoryUnit { source, mut job } = self;
        source.record(Settled {
            id: job.id.clone(),
            attempt: job.attempt,
            action: action.clone(),
            result,
            error,
        });
        match action {
            Action::Retry { .. } => {
                job.attempt += 1;
                source.state().delayed += 1;
                // The job's own delay (the decision rounds to whole seconds, as rq's
                // scheduled registry does; in memory the exact delay keeps tests fast).
                let delay = job.retry_delay;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut s = source.state();
                    s.delayed -= 1;
                    s.queued.push_back(job);
                    drop(s);
                    source.wake.notify_one();
                });
            }
            Action::GiveBack => {
                source.state().queued.push_front(job);
                source.wake.notify_one();
            }
            Action::Finish | Action::DeadLetter(_) | Action::Stopped | Action::Drop => {}
        }
    }
}

#[cfg(test)]
mod tests;
