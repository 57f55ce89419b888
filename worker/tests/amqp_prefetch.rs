//! Live prefetch resize: `WorkerHandle::set_concurrency` re-applies `basic.qos` on the
//! live consuming channel, so the broker holds out as many deliveries as the new budget
//! without a reconnect (RabbitMQ's own unacked count shows it).

mod amqp_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqp_common::*;
use anyhow::Result;
use mindora_sdk::amqp::Envelope;
use mindora_tests::RedisDb;
use mindora_worker::handler::JobContext;
use mindora_worker::Worker;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Holds for `for_` that the queue's unacked count stays `n` (polled).
async fn stays_unacked(queue: &str, n: u64, for_: Duration) -> Option<u64> {
    let deadline = std::time::Instant::now() + for_;
    while std::time::Instant::now() < deadline {
        let now = unacked(queue);
        if now != Some(n) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_concurrency_resizes_the_live_prefetch() -> Result<()> {
    let fx = Fixture::new("prefetch").await;
    let db = RedisDb::lease()?;
    let started = Arc::new(AtomicUsize::new(0));
    // Each task holds until the test lets one finish.
    let gate = Arc::new(Semaphore::new(0));
    let (s, g) = (started.clone(), gate.clone());
    let redis_url = db.url();
    let worker = Worker::from_arg_list([
        "--redis-url",
        redis_url.as_str(),
        "--name",
        &format!("w-{}", fx.queue),
        "--queues",
        &fx.queue,
        "--amqp-url",
        &url(),
        "--amqp-queues",
        &fx.queue,
        "--amqp-declare-shared",
        "false",
        "--amqp-retry-delays",
        "1,2",
        "--amqp-max-attempts",
        "3",
        "--amqp-connection-name",
        &format!("mindora-test-{}", fx.queue),
        "--concurrency",
        "2",
    ])?
    .handle_signals(false)
    .handler("test.gated", move |_ctx: JobContext| {
        let (s, g) = (s.clone(), g.clone());
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            if let Ok(p) = g.acquire().await {
                p.forget();
            }
            Ok(Value::Null)
        }
    });
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());
    let client = fx.client().await;
    for i in 0..20 {
        client
            .publish(&fx.queue, &Envelope::new("test.gated", vec![json!(i)]))
            .await?;
    }
    let q = fx.queue.clone();
    let count = |n: usize| {
        let started = started.clone();
        move || {
            let started = started.clone();
            async move { started.load(Ordering::SeqCst) == n }
        }
    };

    // Budget 2: the broker holds out 2.
    assert!(wait_until(Duration::from_secs(15), count(2)).await);
    assert!(wait_until(Duration::from_secs(10), || async { unacked(&q) == Some(2) }).await);
    assert_eq!(stays_unacked(&q, 2, Duration::from_secs(1)).await, Some(2));

    // Grown to 5 on the live session: 5 run, 5 held, no more.
    handle.set_concurrency(5);
    assert!(
        wait_until(Duration::from_secs(10), count(5)).await,
        "5 run after growing"
    );
    assert!(wait_until(Duration::from_secs(10), || async { unacked(&q) == Some(5) }).await);
    assert_eq!(stays_unacked(&q, 5, Duration::from_secs(1)).await, Some(5));
    assert_eq!(started.load(Ordering::SeqCst), 5);

    // Shrunk to 1: the 5 running finish (none is interrupted), then 1 at a time.
    handle.set_concurrency(1);
    gate.add_permits(5);
    assert!(
        wait_until(Duration::from_secs(10), count(6)).await,
        "the next one starts"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async { unacked(&q) == Some(1) }).await,
        "unacked after shrinking: {:?}",
        unacked(&q)
    );
    assert_eq!(stays_unacked(&q, 1, Duration::from_secs(1)).await, Some(1));
    assert_eq!(started.load(Ordering::SeqCst), 6);

    // The rest runs to the end, each once, all acked.
    gate.add_permits(100);
    assert!(wait_until(Duration::from_secs(20), count(20)).await);
    assert!(wait_until(Duration::from_secs(10), || async { unacked(&q) == Some(0) }).await);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(20), running).await???;
    assert_eq!(fx.depth(&fx.queue).await, 0);
    assert_eq!(started.load(Ordering::SeqCst), 20, "each ran once");
    client.close().await.ok();
    fx.cleanup().await;
    Ok(())
}
