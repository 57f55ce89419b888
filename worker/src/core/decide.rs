//! The settle decision, apart from its I/O: from an execution's outcome, the job's retry
//! budget and whether the execution still owns the job, what its source must do. Each
//! source only applies the [`Action`] (rq: a transition script; AMQP: ack, retry queue,
//! DLQ, nack), so the rules are one function, tested here without any service.

use mindora_sdk::RetryPolicy;

use super::{Interrupt, Outcome};

/// What a job may still retry, as its source knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPlan {
    /// The job carries its own budget (rq `retries_left`, AMQP attempt of max).
    Own {
        /// Retries still allowed after this attempt.
        remaining: u32,
        /// Delay before the next one.
        delay_secs: f64,
    },
    /// The job carries none; the queue's default policy applies, and the source attaches
    /// it to the job (rq writes it as rq's retry fields) before scheduling the retry.
    QueueDefault(RetryPolicy),
    /// No policy at all: a failure is final.
    None,
}

/// Whether the execution still owns its job when it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// It does (the write itself still checks atomically, e.g. inside rq's scripts).
    Held,
    /// It is known to have lost it (recovered elsewhere after its lease lapsed, or its
    /// master was replaced): nothing may be written for it.
    Lost,
}

/// Why a job is out of the game for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The failure cannot be fixed by running again (bad input, unknown function...).
    Permanent,
    /// Retryable, but no attempt is left.
    MaxAttempts,
}

impl DeadReason {
    /// The reason as AMQP's dead-letter header and logs spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadReason::Permanent => "permanent_error",
            DeadReason::MaxAttempts => "max_attempts",
        }
    }
}

/// What the source does with the outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Record the result.
    Finish,
    /// Run again after `delay_secs`; `adopt` is the queue default to attach to the job first.
    Retry {
        /// Whole seconds (rounded up) before the next attempt.
        delay_secs: u64,
        /// The default policy the job did not carry, to be written into it.
        adopt: Option<RetryPolicy>,
    },
    /// Failed for good (rq: failed registry; AMQP: the DLQ).
    DeadLetter(DeadReason),
    /// Stopped on request: a final outcome, not a failure to retry.
    Stopped,
    /// The shutdown grace ran out: back to its queue, no attempt spent.
    GiveBack,
    /// The execution lost its job: write nothing (the fencing drop, logged and counted).
    Drop,
}

/// The decision. Pure: same inputs, same action.
pub fn decide(outcome: &Outcome, plan: &RetryPlan, fence: Fence) -> Action {
    if fence == Fence::Lost {
        return Action::Drop;
    }
    match outcome {
        Outcome::Done(_) => Action::Finish,
        Outcome::Interrupted(Interrupt::Stop) => Action::Stopped,
        Outcome::Interrupted(Interrupt::Shutdown) => Action::GiveBack,
        Outcome::Failed(err) if !err.retryable => Action::DeadLetter(DeadReason::Permanent),
        Outcome::Failed(_) => retry_or_dead(plan),
    }
}

fn retry_or_dead(plan: &RetryPlan) -> Action {
    match plan {
        RetryPlan::Own {
            remaining,
            delay_secs,
        } if *remaining > 0 => Action::Retry {
            delay_secs: whole_secs(*delay_secs),
            adopt: None,
        },
        RetryPlan::QueueDefault(policy) if policy.retries() > 0 => Action::Retry {
            delay_secs: whole_secs(policy.delay_secs(i64::from(policy.retries()))),
            adopt: Some(policy.clone()),
        },
        _ => Action::DeadLetter(DeadReason::MaxAttempts),
    }
}

/// rq schedules retries in whole seconds; a negative or NaN delay means "now".
fn whole_secs(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        secs.ceil() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
