//! A failing task goes through the delay queues with growing delays, then lands in the
//! DLQ with its error, the attempt history and the original body byte-for-byte.

use std::sync::Arc;
use std::time::Duration;

use mindora_sdk::amqp::{
    AttemptRecord, Envelope, HEADER_ATTEMPT, HEADER_DEAD_REASON, HEADER_ERROR, HEADER_HISTORY,
};
use mindora_tests::amqp::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_through_delay_queues_then_dead_letter() {
    let fx = Fixture::new("retry").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 4);
    let env = Envelope::new(
        "test.flaky",
        vec![json!("payload"), json!({"nested": [1, 2]})],
    )
    .with_priority(3);
    let original = serde_json::to_vec(&env).unwrap();
    fx.publish_env(&env).await;

    // First failure: the message waits in the 1 s delay queue.
    assert!(wait_until(Duration::from_secs(5), || async { seen(&log).len() == 1 }).await);
    let retry1 = format!("{}.retry.1", fx.queue);
    assert!(
        wait_until(Duration::from_secs(2), || async {
            fx.depth(&retry1).await == 1
        })
        .await,
        "first retry parked in {retry1}"
    );
    // Second failure: the 2 s delay queue.
    assert!(wait_until(Duration::from_secs(5), || async { seen(&log).len() == 2 }).await);
    let retry2 = format!("{}.retry.2", fx.queue);
    assert!(
        wait_until(Duration::from_secs(2), || async {
            fx.depth(&retry2).await == 1
        })
        .await,
        "second retry parked in {retry2}"
    );
    let dead = fx
        .get(&fx.dlq(), Duration::from_secs(10))
        .await
        .expect("dead-lettered after the third attempt");

    let calls = seen(&log);
    assert_eq!(calls.len(), 3, "max_attempts = 3");
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(calls.iter().all(|c| c.id == env.id));
    let gap1 = calls[1].at - calls[0].at;
    let gap2 = calls[2].at - calls[1].at;
    assert!(
        gap1 >= Duration::from_millis(950),
        "first delay ~1 s, was {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1950),
        "second delay ~2 s, was {gap2:?}"
    );
    assert!(gap2 > gap1, "delays grow");

    assert_eq!(dead.delivery.data, original, "original body intact");
    let props = &dead.delivery.properties;
    assert_eq!(*props.priority(), Some(3), "properties kept");
    assert_eq!(
        props.message_id().as_ref().map(|m| m.to_string()),
        Some(env.id.clone())
    );
    assert_eq!(
        header_text(props, HEADER_DEAD_REASON).unwrap(),
        "max_attempts"
    );
    assert_eq!(
        header_text(props, HEADER_ERROR).unwrap(),
        "ValueError: flaky attempt 3"
    );
    assert!(header_text(props, HEADER_ATTEMPT).unwrap().contains('3'));
    let history: Vec<AttemptRecord> =
        serde_json::from_str(&header_text(props, HEADER_HISTORY).unwrap()).unwrap();
    assert_eq!(
        history.iter().map(|h| h.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(history[0].message, "flaky attempt 1");
    assert!(history.iter().all(|h| h.kind == "ValueError"));

    worker.stop().await;
    for q in [&fx.queue, &retry1, &retry2, &fx.dlq()] {
        assert_eq!(fx.depth(q).await, 0, "{q} empty");
    }
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_skip_retries() {
    let fx = Fixture::new("permanent").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log), 2);
    // mindora.sleep with a bad argument raises a permanent ValueError.
    fx.publish_env(&Envelope::new("mindora.sleep", vec![json!("not a number")]))
        .await;
    let dead = fx
        .get(&fx.dlq(), Duration::from_secs(5))
        .await
        .expect("dead-lettered");
    let props = &dead.delivery.properties;
    assert_eq!(
        header_text(props, HEADER_DEAD_REASON).unwrap(),
        "permanent_error"
    );
    assert_eq!(fx.depth(&format!("{}.retry.1", fx.queue)).await, 0);
    worker.stop().await;
    fx.cleanup().await;
}
