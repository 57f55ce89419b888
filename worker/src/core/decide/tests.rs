//! Every combination of outcome, retry plan and fence, checked against the rules the
//! sources applied inline before (rq's `Retry`, the queue default, AMQP's max attempts).

use super::*;
use crate::handler::{HandlerError, Output};

fn outcomes() -> Vec<(&'static str, Outcome)> {
    vec![
        ("done", Outcome::Done(Output::Value(serde_json::json!(1)))),
        (
            "retryable",
            Outcome::Failed(HandlerError::retryable("Boom", "x")),
        ),
        (
            "permanent",
            Outcome::Failed(HandlerError::permanent("Bad", "x")),
        ),
        ("stop", Outcome::Interrupted(Interrupt::Stop)),
        ("shutdown", Outcome::Interrupted(Interrupt::Shutdown)),
    ]
}

fn exponential(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::Exponential {
        max_attempts,
        base_secs: 2.0,
        factor: 2.0,
        cap_secs: 300.0,
        jitter: 0.0,
    }
}

fn plans() -> Vec<(&'static str, RetryPlan)> {
    vec![
        (
            "own-left",
            RetryPlan::Own {
                remaining: 2,
                delay_secs: 4.2,
            },
        ),
        (
            "own-none-left",
            RetryPlan::Own {
                remaining: 0,
                delay_secs: 4.2,
            },
        ),
        ("default", RetryPlan::QueueDefault(exponential(3))),
        (
            "default-no-retries",
            RetryPlan::QueueDefault(exponential(1)),
        ),
        ("none", RetryPlan::None),
    ]
}

/// The table every source used to spell out in its own settle code.
fn expected(outcome: &str, plan: &str, fence: Fence) -> Action {
    if fence == Fence::Lost {
        return Action::Drop;
    }
    match (outcome, plan) {
        ("done", _) => Action::Finish,
        ("stop", _) => Action::Stopped,
        ("shutdown", _) => Action::GiveBack,
        ("permanent", _) => Action::DeadLetter(DeadReason::Permanent),
        ("retryable", "own-left") => Action::Retry {
            delay_secs: 5,
            adopt: None,
        },
        // Exponential, 3 attempts: 2 retries left, first delay base * factor^0 = 2 s.
        ("retryable", "default") => Action::Retry {
            delay_secs: 2,
            adopt: Some(exponential(3)),
        },
        ("retryable", _) => Action::DeadLetter(DeadReason::MaxAttempts),
        other => panic!("no expectation for {other:?}"),
    }
}

#[test]
fn every_outcome_plan_and_fence() {
    let mut checked = 0;
    for fence in [Fence::Held, Fence::Lost] {
        for (o_name, outcome) in outcomes() {
            for (p_name, plan) in plans() {
                assert_eq!(
                    decide(&outcome, &plan, fence),
                    expected(o_name, p_name, fence),
                    "outcome {o_name}, plan {p_name}, fence {fence:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 5 * 5);
}

#[test]
fn delays_round_up_and_never_go_negative() {
    let fail = Outcome::Failed(HandlerError::retryable("Boom", "x"));
    for (delay, want) in [
        (0.0, 0),
        (0.1, 1),
        (1.0, 1),
        (299.5, 300),
        (-3.0, 0),
        (f64::NAN, 0),
    ] {
        let plan = RetryPlan::Own {
            remaining: 1,
            delay_secs: delay,
        };
        assert_eq!(
            decide(&fail, &plan, Fence::Held),
            Action::Retry {
                delay_secs: want,
                adopt: None
            },
            "delay {delay}"
        );
    }
}

#[test]
fn rq_retry_intervals_are_honoured_through_the_plan() {
    // rq's Retry(max=3, interval=[1, 5, 30]): with 3 left the first interval applies.
    let policy = RetryPolicy::Rq {
        max: 3,
        intervals: vec![1, 5, 30],
    };
    let fail = Outcome::Failed(HandlerError::retryable("Boom", "x"));
    for (left, want) in [(3, 1), (2, 5), (1, 30)] {
        let plan = RetryPlan::Own {
            remaining: left,
            delay_secs: policy.delay_secs(i64::from(left)),
        };
        assert_eq!(
            decide(&fail, &plan, Fence::Held),
            Action::Retry {
                delay_secs: want,
                adopt: None
            }
        );
    }
}

#[test]
fn dead_reasons_read_as_the_dlq_header_does() {
    assert_eq!(DeadReason::Permanent.as_str(), "permanent_error");
    assert_eq!(DeadReason::MaxAttempts.as_str(), "max_attempts");
}
