//! RPC over reply_to + correlation_id with the SDK's `call`.

use std::sync::Arc;
use std::time::Duration;

use mindora_sdk::amqp::{AmqpError, Envelope};
use mindora_tests::amqp::*;
use serde_json::{json, Map};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_round_trips_results_and_errors() {
    let fx = Fixture::new("rpc").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log), 4);
    let client = fx.client().await;
    let mut kwargs = Map::new();
    kwargs.insert("k".into(), json!("v"));
    let value = client
        .call(
            "mindora.echo",
            vec![json!(1), json!("two")],
            kwargs,
            Duration::from_secs(10),
        )
        .await
        .expect("echo reply");
    assert_eq!(value, json!({"args": [1, "two"], "kwargs": {"k": "v"}}));

    // Concurrent calls each get their own reply.
    let calls = (0..20).map(|i| {
        let client = &client;
        async move {
            client
                .call(
                    "mindora.echo",
                    vec![json!(i)],
                    Map::new(),
                    Duration::from_secs(10),
                )
                .await
        }
    });
    let replies = futures::future::join_all(calls).await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap()["args"][0], json!(i));
    }

    // A failure comes back as an error once the task is dead-lettered.
    let err = client
        .call_envelope(
            &fx.queue,
            Envelope::new("mindora.fail", vec![json!("nope")]).with_max_attempts(1),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    match err {
        AmqpError::Remote { kind, message, .. } => {
            assert_eq!(kind, "RuntimeError");
            assert_eq!(message, "nope");
        }
        other => panic!("expected a remote error, got {other}"),
    }
    // Nobody serves this queue: the caller times out instead of hanging.
    let err = client
        .call_envelope(
            &fx.dlq(),
            Envelope::new("mindora.echo", vec![]),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpError::Timeout { .. }), "{err}");
    // Unroutable publishes are errors, not silent losses.
    let err = client
        .publish(
            "no-such-queue-mindora-test",
            &Envelope::new("mindora.noop", vec![]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpError::Unroutable(_)), "{err}");

    worker.stop().await;
    client.close().await.ok();
    fx.cleanup().await;
}
