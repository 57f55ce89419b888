//! Redis going away and coming back: a private redis-server (own port, so the shared one
//! is untouched) is stopped under a running worker and started again; the worker
//! reconnects and carries on.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_sdk::{Client, EnqueueOptions};
use serde_json::json;

struct PrivateRedis(Child);

impl PrivateRedis {
    fn start(port: u16) -> Result<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        mindora_tests::wait_for(Duration::from_secs(10), "private redis", || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ()))
        })?;
        Ok(PrivateRedis(child))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_survives_a_redis_restart() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = PrivateRedis::start(port)?;
    let mut worker = Command::new(mindora_tests::worker_binary()?)
        .args([
            "--redis-url",
            &url,
            "--name",
            "w-restart",
            "--heartbeat-secs",
            "1",
        ])
        .env("RUST_LOG", "error")
        .spawn()?;
    let client = Client::connect(&url).await?;
    let before = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![json!("before")],
            Default::default(),
            EnqueueOptions::default(),
        )
        .await?;
    assert_eq!(
        client.wait(&before, Duration::from_secs(10)).await?["args"],
        json!(["before"])
    );

    drop(server); // Redis goes away (and loses everything: it keeps nothing on disk)
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        worker.try_wait()?.is_none(),
        "worker must not exit while Redis is down"
    );
    let _server = PrivateRedis::start(port)?;

    let client = Client::connect(&url).await?;
    let after = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![json!("after")],
            Default::default(),
            EnqueueOptions::default(),
        )
        .await?;
    let value = client.wait(&after, Duration::from_secs(30)).await?;
    assert_eq!(value["args"], json!(["after"]));
    // The restarted Redis is empty: the worker registers itself again on its next heartbeat.
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let started = std::time::Instant::now();
    let workers = loop {
        let workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg("rq:workers")
            .query_async(&mut conn)
            .await?;
        if !workers.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break workers;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        workers,
        vec!["rq:worker:w-restart".to_string()],
        "re-registered after restart"
    );
    Ok(())
}
