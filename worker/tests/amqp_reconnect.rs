//! The broker drops the worker's connection mid-stream: the worker reconnects with
//! backoff, re-declares, resumes, and no task is lost (unacked ones are redelivered).
//! Graceful shutdown finishes running tasks, acks them, and leaves the rest queued.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::*;
use serde_json::{json, Map};

fn record(i: usize, sleep_ms: u64) -> Envelope {
    let mut kwargs = Map::new();
    kwargs.insert("sleep_ms".into(), json!(sleep_ms));
    Envelope::new("test.record", vec![json!(i)]).with_kwargs(kwargs)
}

fn distinct(log: &Log) -> BTreeSet<u64> {
    seen(log)
        .iter()
        .filter_map(|s| s.args[0].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_connection_close_mid_stream_loses_nothing() {
    let fx = Fixture::new("reconnect").await;
    let client = fx.client().await;
    let total = 600;
    for i in 0..total {
        // 600 x 300 ms over 8 slots is ~22 s of work: the close (rabbitmqctl, seconds on a
        // loaded machine) lands mid-stream.
        client.publish(&fx.queue, &record(i, 300)).await.unwrap();
    }
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 8);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            distinct(&log).len() >= 100
        })
        .await
    );
    let closed = tokio::task::spawn_blocking({
        let name = fx.args.connection_name.clone();
        move || close_connections_named(&name)
    })
    .await
    .unwrap();
    assert_eq!(closed, 1, "the worker's connection was found and closed");
    let at_close = distinct(&log).len();
    assert!(
        at_close < total,
        "closed mid-stream ({at_close} of {total} done)"
    );

    // Publishing keeps working on another connection meanwhile.
    for i in total..total + 50 {
        client.publish(&fx.queue, &record(i, 0)).await.unwrap();
    }
    let want = total + 50;
    assert!(
        wait_until(Duration::from_secs(120), || async {
            distinct(&log).len() >= want
        })
        .await,
        "all {want} tasks handled after the reconnect, got {}",
        distinct(&log).len()
    );
    worker.stop().await;
    assert_eq!(distinct(&log), (0..want as u64).collect::<BTreeSet<_>>());
    assert_eq!(
        fx.depth(&fx.queue).await,
        0,
        "nothing left unacked or unhandled"
    );
    assert_eq!(fx.depth(&fx.dlq()).await, 0);
    let redelivered = seen(&log).len() - want;
    eprintln!("forced close at {at_close}/{total}; {redelivered} tasks re-ran after redelivery");
    client.close().await.ok();
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_tasks_and_leaves_the_rest_queued() {
    let fx = Fixture::new("shutdown").await;
    let client = fx.client().await;
    for i in 0..14 {
        client.publish(&fx.queue, &record(i, 1500)).await.unwrap();
    }
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 4);
    // Let the first four start, then stop while they run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen(&log).is_empty(), "still running");
    worker.stop().await;
    assert_eq!(seen(&log).len(), 4, "the running tasks finished");
    assert_eq!(
        fx.depth(&fx.queue).await,
        10,
        "finished ones acked, the rest queued"
    );
    client.close().await.ok();
    fx.cleanup().await;
}
