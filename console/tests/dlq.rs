//! AMQP dead letters on real RabbitMQ: a task that fails every attempt dies into its DLQ
//! through the worker's own topology; the console counts it, requeues it with fresh
//! attempts (the worker runs attempts 1..3 again), and a requeue to a queue that does not
//! exist loses nothing.

use std::time::Duration;

use mindora_console::data::dlq;
use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::{self, registry, seen, wait_until, Fixture, Log};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_counted_and_requeued_with_fresh_attempts() {
    let fx = Fixture::new("console_dlq").await;
    let log = Log::default();
    let running = fx.start(registry(log.clone()), 2);
    fx.publish_env(&Envelope::new("test.flaky", vec![json!(1)]))
        .await;
    fx.publish_env(&Envelope::new("test.flaky", vec![json!(2)]))
        .await;
    let dlq_name = fx.dlq();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            fx.depth(&dlq_name).await == 2
        })
        .await,
        "both tasks dead-lettered"
    );
    let summary = dlq::dlq_summary(
        &amqp::url(),
        &[fx.queue.clone(), "t_console_no_such_queue".into()],
    )
    .await
    .expect("summary");
    assert_eq!(summary, vec![(dlq_name.clone(), 2)]);

    // One moved back: the worker gives it attempts 1, 2, 3 again, then it dies again.
    let report = dlq::dlq_requeue(&amqp::url(), &dlq_name, &fx.queue, 1)
        .await
        .expect("requeue");
    assert_eq!((report.done, report.skipped.len()), (1, 0));
    assert!(
        wait_until(Duration::from_secs(30), || async {
            seen(&log).len() == 9 && fx.depth(&dlq_name).await == 2
        })
        .await,
        "requeued task ran its attempts again: {:?}",
        seen(&log).iter().map(|s| s.attempt).collect::<Vec<_>>()
    );
    let attempts: Vec<u32> = seen(&log)[6..].iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    running.stop().await;

    // A target that does not exist: nothing is acked, nothing is lost.
    let report = dlq::dlq_requeue(&amqp::url(), &dlq_name, "t_console_no_such_queue", 5)
        .await
        .expect("requeue runs");
    assert_eq!(report.done, 0);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(fx.depth(&dlq_name).await, 2);

    // Both go back; the work queue holds them with a reset attempt and no death records.
    let report = dlq::dlq_requeue(&amqp::url(), &dlq_name, &fx.queue, 10)
        .await
        .expect("requeue");
    assert_eq!(report.done, 2);
    let msg = fx
        .get(&fx.queue, Duration::from_secs(5))
        .await
        .expect("requeued message");
    let props = &msg.delivery.properties;
    assert_eq!(
        amqp::header_text(props, mindora_sdk::amqp::HEADER_ATTEMPT).as_deref(),
        Some("LongLongInt(1)")
    );
    assert!(amqp::header_text(props, mindora_sdk::amqp::HEADER_DEAD_REASON).is_none());
    assert!(amqp::header_text(props, "x-death").is_none());
    let body: serde_json::Value = serde_json::from_slice(&msg.delivery.data).expect("json body");
    assert_eq!(body["function"], "test.flaky");
    fx.cleanup().await;
}
