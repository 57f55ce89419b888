//! With a backlog, higher-priority tasks run first (classic queue with x-max-priority).

use std::sync::Arc;
use std::time::Duration;

use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_runs_in_priority_order() {
    let fx = Fixture::new("priority").await;
    let client = fx.client().await;
    // Backlog first (no consumer yet): priorities 0..=10 shuffled, 4 of each.
    let mut priorities: Vec<u8> = (0..=10).flat_map(|p| [p; 4]).collect();
    // Deterministic shuffle.
    for i in (1..priorities.len()).rev() {
        let j = (i * 7919 + 13) % (i + 1);
        priorities.swap(i, j);
    }
    for (i, p) in priorities.iter().enumerate() {
        client
            .publish(
                &fx.queue,
                &Envelope::new("test.record", vec![json!(*p), json!(i)]).with_priority(*p),
            )
            .await
            .unwrap();
    }
    let log: Log = Arc::default();
    // One at a time (prefetch 1) so the order seen is the order the broker hands out.
    let worker = fx.start(registry(log.clone()), 1);
    let n = priorities.len();
    assert!(wait_until(Duration::from_secs(15), || async { seen(&log).len() >= n }).await);
    worker.stop().await;
    let order: Vec<u64> = seen(&log)
        .iter()
        .map(|s| s.args[0].as_u64().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "highest priority first");
    // Within one priority, FIFO.
    for p in 0..=10u64 {
        let idx: Vec<u64> = seen(&log)
            .iter()
            .filter(|s| s.args[0].as_u64() == Some(p))
            .map(|s| s.args[1].as_u64().unwrap())
            .collect();
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "FIFO within priority {p}: {idx:?}"
        );
    }
    client.close().await.ok();
    fx.cleanup().await;
}
