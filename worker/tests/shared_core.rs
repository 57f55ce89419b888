//! One execution core for both sources, seen from outside a running `mindora-worker`:
//! `--concurrency` bounds Redis and AMQP jobs together, `--shutdown-grace-secs` bounds the
//! drain of both (running AMQP tasks go back to the broker, Redis jobs to the head of their
//! queue), and `/readyz` (axum, read with a real HTTP client) follows Redis, the AMQP
//! session and draining.

use std::time::{Duration, Instant};

use anyhow::Result;
use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::*;
use mindora_tests::{free_port, RedisDb, WorkerProcess};
use serde_json::json;

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Sum of `mindora_jobs_in_flight` over sources.
fn in_flight(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("mindora_jobs_in_flight"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_status(port: u16, path: &str, want: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if get(port, path).await.map(|(s, _)| s) == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_and_one_grace_for_redis_and_amqp() -> Result<()> {
    let fx = Fixture::new("core").await;
    let db = RedisDb::lease()?;
    let port = free_port()?;
    let metrics_addr = format!("127.0.0.1:{port}");
    let url = url();
    let mut worker = WorkerProcess::start(
        &db,
        "w-core",
        &[
            "--queues",
            "default",
            "--concurrency",
            "2",
            "--shutdown-grace-secs",
            "2",
            "--metrics-addr",
            &metrics_addr,
            "--amqp-url",
            &url,
            "--amqp-queues",
            &fx.queue,
            "--amqp-declare-shared",
            "false",
        ],
    )?;
    assert!(
        wait_status(port, "/readyz", 200, Duration::from_secs(15)).await,
        "ready with Redis and the AMQP session up"
    );
    let client = fx.client().await;
    for _ in 0..3 {
        client
            .publish(&fx.queue, &Envelope::new("mindora.sleep", vec![json!(60)]))
            .await?;
    }
    let sdk = mindora_sdk::Client::connect(&db.url()).await?;
    for _ in 0..3 {
        sdk.enqueue(
            "default",
            "mindora.sleep",
            vec![json!(60)],
            Default::default(),
            Default::default(),
        )
        .await?;
    }
    // Six long jobs wait on two sources; never more than two run at once.
    let mut peak = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        if let Some((200, text)) = get(port, "/metrics").await {
            let n = in_flight(&text);
            assert!(n <= 2.0, "in flight {n} > --concurrency 2:\n{text}");
            peak = peak.max(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peak, 2.0, "the budget was used");

    worker.signal("TERM")?;
    assert!(
        wait_status(port, "/readyz", 503, Duration::from_secs(2)).await,
        "not ready while draining"
    );
    assert_eq!(
        get(port, "/healthz").await.map(|(s, _)| s),
        Some(200),
        "alive while draining"
    );
    let status = worker.wait_exit(Duration::from_secs(25))?;
    assert!(status.success(), "clean exit after the grace: {status}");

    // Everything went back: the three AMQP tasks to their queue, the three rq jobs to theirs.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            fx.depth(&fx.queue).await == 3
        })
        .await,
        "AMQP tasks back in the queue, depth {}",
        fx.depth(&fx.queue).await
    );
    assert_eq!(fx.depth(&fx.dlq()).await, 0);
    let mut conn = db.conn()?;
    let queued: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut conn)?;
    assert_eq!(queued, 3, "rq jobs back in their queue");
    let started: i64 = redis::cmd("ZCARD").arg("rq:wip:default").query(&mut conn)?;
    assert_eq!(started, 0);
    fx.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_needs_the_amqp_session_when_amqp_is_on() -> Result<()> {
    let db = RedisDb::lease()?;
    let port = free_port()?;
    let metrics_addr = format!("127.0.0.1:{port}");
    let queue = format!(
        "t_noamqp_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let _worker = WorkerProcess::start(
        &db,
        "w-noamqp",
        &[
            "--metrics-addr",
            &metrics_addr,
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "--amqp-queues",
            &queue,
        ],
    )?;
    assert!(wait_status(port, "/healthz", 200, Duration::from_secs(15)).await);
    // Registered with Redis (so Redis is fine) ...
    let mut conn = db.conn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = redis::cmd("SCARD").arg("rq:workers").query(&mut conn)?;
        if n == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "worker never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... yet not ready: its AMQP session cannot come up.
    let (status, body) = get(port, "/readyz").await.expect("readyz answers");
    assert_eq!(status, 503, "{body}");
    let (status, text) = get(port, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    assert!(text.contains("mindora_worker_concurrency"), "{text}");
    assert_eq!(get(port, "/nope").await.map(|(s, _)| s), Some(404));
    Ok(())
}
