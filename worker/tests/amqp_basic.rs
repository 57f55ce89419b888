//! Publish → handled → acked; malformed bodies and unknown functions straight to the DLQ;
//! a panicking handler is a failed attempt, not a dead worker; topology is idempotent.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use mindora_sdk::amqp::{Envelope, HEADER_DEAD_REASON, HEADER_ERROR, HEADER_QUEUE};
use mindora_tests::amqp::*;
use mindora_worker::amqp::declare_topology;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_tasks_are_handled_and_acked() {
    let fx = Fixture::new("basic").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 8);
    let client = fx.client().await;
    for i in 0..50 {
        client
            .publish(&fx.queue, &Envelope::new("test.record", vec![json!(i)]))
            .await
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(15), || async { seen(&log).len() >= 50 }).await,
        "all 50 handled, saw {}",
        seen(&log).len()
    );
    worker.stop().await;
    // Stopped worker: anything unacked would be back in the queue now.
    assert_eq!(fx.depth(&fx.queue).await, 0, "every message was acked");
    assert_eq!(fx.depth(&fx.dlq()).await, 0);
    let mut args: Vec<i64> = seen(&log)
        .iter()
        .map(|s| s.args[0].as_i64().unwrap())
        .collect();
    args.sort();
    args.dedup();
    assert_eq!(args, (0..50).collect::<Vec<_>>());
    assert!(seen(&log).iter().all(|s| s.attempt == 1));
    client.close().await.ok();
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_go_straight_to_the_dlq() {
    let fx = Fixture::new("malformed").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 4);
    let bad_bodies: [&[u8]; 4] = [
        b"this is not json",
        b"\xff\xfe\x00binary",
        br#"{"args":[1]}"#,
        br#"{"function":"","args":[]}"#,
    ];
    for body in bad_bodies {
        fx.publish_raw(
            body,
            BasicProperties::default().with_message_id("bad".into()),
        )
        .await;
    }
    fx.publish_env(&Envelope::new("no.such.function", vec![]))
        .await;
    // The consumer keeps going after all of them.
    fx.publish_env(&Envelope::new("test.record", vec![json!("after")]))
        .await;
    assert!(wait_until(Duration::from_secs(10), || async { !seen(&log).is_empty() }).await);

    let mut dead = Vec::new();
    for _ in 0..5 {
        let m = fx
            .get(&fx.dlq(), Duration::from_secs(10))
            .await
            .expect("a dead-lettered message");
        dead.push(m);
    }
    let bodies: Vec<Vec<u8>> = dead.iter().map(|m| m.delivery.data.clone()).collect();
    for body in bad_bodies {
        assert!(bodies.contains(&body.to_vec()), "body kept byte-for-byte");
    }
    for m in &dead {
        let props = &m.delivery.properties;
        let reason = header_text(props, HEADER_DEAD_REASON).unwrap();
        let error = header_text(props, HEADER_ERROR).unwrap();
        assert_eq!(header_text(props, HEADER_QUEUE).unwrap(), fx.queue);
        if m.delivery.data.starts_with(b"{\"id\"") {
            assert_eq!(reason, "permanent_error");
            assert!(error.starts_with("UnknownFunction"), "{error}");
        } else {
            assert_eq!(reason, "malformed");
            assert!(error.starts_with("MalformedEnvelope"), "{error}");
        }
    }
    worker.stop().await;
    assert_eq!(fx.depth(&fx.queue).await, 0);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt() {
    let fx = Fixture::new("panic").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 2);
    fx.publish_env(&Envelope::new("test.panic", vec![]).with_max_attempts(1))
        .await;
    fx.publish_env(&Envelope::new("test.record", vec![json!(1)]))
        .await;
    let m = fx
        .get(&fx.dlq(), Duration::from_secs(10))
        .await
        .expect("dead-lettered");
    let error = header_text(&m.delivery.properties, HEADER_ERROR).unwrap();
    assert!(error.contains("boom in handler"), "{error}");
    assert!(wait_until(Duration::from_secs(5), || async { seen(&log).len() == 1 }).await);
    worker.stop().await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_declaration_is_idempotent_and_matches_the_shared_names() {
    let fx = Fixture::new("topo").await;
    let mut args = fx.args.clone();
    // The shared names are the deployment's fixed ones; declaring them is idempotent and
    // this test does not delete them (other components use them).
    args.declare_shared = true;
    declare_topology(&args).await.expect("first");
    declare_topology(&args)
        .await
        .expect("second, same arguments");
    for q in [
        "user_notifications",
        &fx.dlq(),
        &format!("{}.retry.1", fx.queue),
        &format!("{}.retry.2", fx.queue),
    ] {
        fx.depth(q).await;
    }
    // A conflicting re-declaration is refused loudly, not silently accepted.
    let mut conflicting = fx.args.clone();
    conflicting.max_priority = 5;
    assert!(declare_topology(&conflicting).await.is_err());
    // Unset URL: a configuration error, not a panic.
    let mut off = fx.args.clone();
    off.url = None;
    assert!(matches!(
        declare_topology(&off).await,
        Err(mindora_worker::amqp::AmqpError::Config(_))
    ));
    fx.cleanup().await;
}
