//! Coalesced acks never reach past a delivery that still runs: with the first delivery
//! running and every later one finished, the broker still holds exactly that one unacked.

use std::sync::Arc;
use std::time::Duration;

use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_acks_never_pass_a_running_delivery() {
    let fx = Fixture::new("acks").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 8);
    let client = fx.client().await;
    let mut slow = Envelope::new("test.record", vec![json!("slow")]);
    slow.kwargs.insert("sleep_ms".into(), json!(6000));
    client.publish(&fx.queue, &slow).await.unwrap();
    for i in 0..40 {
        client
            .publish(&fx.queue, &Envelope::new("test.record", vec![json!(i)]))
            .await
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { seen(&log).len() >= 40 }).await,
        "the 40 fast tasks ran"
    );
    assert!(seen(&log).iter().all(|s| s.args[0] != json!("slow")));
    let queue = fx.queue.clone();
    // Every fast one acked, the running one not (a multiple ack past it would make it 0).
    let mut last = None;
    let settled = wait_until(Duration::from_secs(10), || {
        last = unacked(&queue);
        async move { last == Some(1) }
    })
    .await;
    assert!(settled, "unacked while the slow task runs: {last:?}");
    worker.stop().await;
    assert_eq!(
        fx.depth(&fx.queue).await,
        0,
        "every message was acked at the end"
    );
    assert_eq!(seen(&log).len(), 41);
    client.close().await.ok();
    fx.cleanup().await;
}
