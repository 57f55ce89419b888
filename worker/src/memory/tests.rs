//! The core on the memory source, in-process: budget, timeouts, retries, dead letters,
//! panics, unknown functions and the shutdown drain, each checked through what the source
//! was told to do. Time is paused, so delays and timeouts cost nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::core::{Budget, DeadReason};
use crate::handler::{JobContext, Registry};
use crate::metrics::Health;

/// Handlers for the tests: `ok` echoes, `slow` sleeps for `secs`, `flaky` fails twice
/// then succeeds, `bad` fails for good, `boom` panics; `peak` records jobs at once.
fn registry(running: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> Registry {
    let mut r = Registry::new();
    r.register("ok", |ctx: JobContext| async move {
        Ok::<_, HandlerError>(json!({"attempt": ctx.attempt}))
    });
    r.register("slow", move |ctx: JobContext| {
        let (running, peak) = (running.clone(), peak.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let secs = ctx.kwargs.get("secs").and_then(Value::as_u64).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(json!(secs))
        }
    });
    r.register("flaky", |ctx: JobContext| async move {
        if ctx.attempt < 3 {
            Err(HandlerError::retryable(
                "Flaky",
                format!("attempt {}", ctx.attempt),
            ))
        } else {
            Ok(json!("third time"))
        }
    });
    r.register("bad", |_ctx: JobContext| async move {
        Err::<Value, _>(HandlerError::permanent("ValueError", "bad input"))
    });
    r.register("boom", |_ctx: JobContext| async move {
        if true {
            panic!("handler blew up");
        }
        Ok::<_, HandlerError>(json!(null))
    });
    r
}

struct Rig {
    source: Arc<MemorySource>,
    core: Arc<Core>,
    shutdown: CancellationToken,
    peak: Arc<AtomicUsize>,
}

fn rig(concurrency: usize) -> Rig {
    let (running, peak) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let core = Core::new(
        Arc::new(registry(running, peak.clone())),
        Budget::new(concurrency),
        Arc::new(Health::default()),
    );
    let source = MemorySource::new("mem");
    let shutdown = CancellationToken::new();
    tokio::spawn(source.clone().run(core.clone(), shutdown.clone()));
    Rig {
        source,
        core,
        shutdown,
        peak,
    }
}

impl Rig {
    /// Waits (in paused time) until `n` settlements are recorded.
    async fn settled(&self, n: usize) -> Vec<Settled> {
        for _ in 0..10_000 {
            let s = self.source.settled();
            if s.len() >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {n} settled", self.source.settled().len());
    }
}

fn job(id: &str, function: &str) -> MemoryJob {
    MemoryJob::new(id, function)
}

#[tokio::test(start_paused = true)]
async fn success_records_the_result() {
    let rig = rig(4);
    rig.source.push(job("a", "ok"));
    let s = rig.settled(1).await;
    assert_eq!(s[0].action, Action::Finish);
    assert_eq!(s[0].result, Some(json!({"attempt": 1})));
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_jobs_at_once() {
    let rig = rig(3);
    for i in 0..10 {
        let mut j = job(&format!("s{i}"), "slow");
        j.kwargs.insert("secs".into(), json!(1));
        rig.source.push(j);
    }
    let s = rig.settled(10).await;
    assert!(s.iter().all(|s| s.action == Action::Finish));
    assert_eq!(rig.peak.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn retries_until_success_with_the_attempt_number() {
    let rig = rig(2);
    let mut j = job("f", "flaky");
    j.max_attempts = 3;
    j.retry_delay = Duration::from_secs(5);
    rig.source.push(j);
    let s = rig.settled(3).await;
    let actions: Vec<_> = s.iter().map(|s| (s.attempt, s.action.clone())).collect();
    assert_eq!(
        actions,
        vec![
            (
                1,
                Action::Retry {
                    delay_secs: 5,
                    adopt: None
                }
            ),
            (
                2,
                Action::Retry {
                    delay_secs: 5,
                    adopt: None
                }
            ),
            (3, Action::Finish),
        ]
    );
    assert!(rig.source.is_empty());
}

#[tokio::test(start_paused = true)]
async fn out_of_attempts_and_permanent_errors_are_dead_letters() {
    let rig = rig(2);
    let mut j = job("f", "flaky");
    j.max_attempts = 2;
    rig.source.push(j);
    rig.source.push(job("b", "bad"));
    let s = rig.settled(3).await;
    let dead: Vec<_> = s
        .iter()
        .filter_map(|s| match &s.action {
            Action::DeadLetter(r) => Some((s.id.as_str(), *r)),
            _ => None,
        })
        .collect();
    assert!(dead.contains(&("f", DeadReason::MaxAttempts)), "{s:?}");
    assert!(dead.contains(&("b", DeadReason::Permanent)), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_rq_timeouts_and_retryable() {
    let rig = rig(1);
    let mut j = job("t", "slow");
    j.kwargs.insert("secs".into(), json!(30));
    j.timeout = Some(Duration::from_secs(2));
    j.max_attempts = 2;
    rig.source.push(j);
    let s = rig.settled(2).await;
    let err = s[0].error.clone().unwrap_or_else(|| panic!("{s:?}"));
    assert_eq!(err.kind, "JobTimeoutException");
    assert_eq!(
        err.message,
        "Task exceeded maximum timeout value (2 seconds)"
    );
    assert!(matches!(s[0].action, Action::Retry { .. }));
    assert_eq!(s[1].action, Action::DeadLetter(DeadReason::MaxAttempts));
}

#[tokio::test(start_paused = true)]
async fn panics_and_unknown_functions_never_take_the_core_down() {
    let rig = rig(2);
    rig.source.push(job("p", "boom"));
    rig.source.push(job("u", "no.such.function"));
    rig.source.push(job("a", "ok"));
    let s = rig.settled(3).await;
    let by_id = |id: &str| s.iter().find(|s| s.id == id).cloned();
    let p = by_id("p").unwrap_or_else(|| panic!("{s:?}"));
    assert_eq!(p.error.map(|e| e.kind).as_deref(), Some("HandlerPanic"));
    let u = by_id("u").unwrap_or_else(|| panic!("{s:?}"));
    assert_eq!(u.action, Action::DeadLetter(DeadReason::Permanent));
    assert_eq!(by_id("a").map(|a| a.action), Some(Action::Finish), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_gives_back_what_outlives_the_grace() {
    let rig = rig(2);
    for (id, secs) in [("quick", 1), ("long", 600)] {
        let mut j = job(id, "slow");
        j.kwargs.insert("secs".into(), json!(secs));
        rig.source.push(j);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.shutdown.cancel();
    rig.core.drain(Duration::from_secs(5)).await;
    let s = rig.source.settled();
    let of = |id: &str| s.iter().find(|s| s.id == id).map(|s| s.action.clone());
    assert_eq!(of("quick"), Some(Action::Finish), "{s:?}");
    assert_eq!(of("long"), Some(Action::GiveBack), "{s:?}");
    // Given back at the head of the queue, no attempt spent.
    assert_eq!(rig.source.queued(), 1);
    assert_eq!(rig.core.budget().held(), 0);
}
