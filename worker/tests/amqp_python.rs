//! Interop: a plain Python `pika` publisher (tests/amqp/publish.py) feeds the worker, and
//! its RPC call gets the worker's reply. Needs the venv from `tests/amqp/setup.sh`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mindora_tests::amqp::*;
use serde_json::{json, Value};

fn python() -> PathBuf {
    let cache = std::env::var("MINDORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/mindora")
        });
    let py = cache.join("venv-pika/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `bash tests/amqp/setup.sh` first (creates the pinned pika venv)",
        py.display()
    );
    py
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/amqp/publish.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_publisher_interop() {
    let py = python();
    let fx = Fixture::new("pika").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 8);
    let count = 25;
    let out = tokio::process::Command::new(&py)
        .arg(script())
        .args([url(), fx.queue.clone(), count.to_string()])
        .args(["--function", "test.record", "--rpc"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("publisher finishes")
        .expect("python runs");
    assert!(
        out.status.success(),
        "publish.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("one JSON reply line");
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(
        reply["result"],
        json!({"args": ["from-python"], "kwargs": {}})
    );
    assert_eq!(reply["attempt"], json!(1));

    assert!(
        wait_until(Duration::from_secs(10), || async {
            seen(&log).len() >= count
        })
        .await,
        "all pika-published tasks handled"
    );
    worker.stop().await;
    let args: BTreeSet<u64> = seen(&log)
        .iter()
        .filter_map(|s| s.args[0].as_u64())
        .collect();
    assert_eq!(args, (0..count as u64).collect());
    assert_eq!(fx.depth(&fx.queue).await, 0);
    assert_eq!(fx.depth(&fx.dlq()).await, 0);
    fx.cleanup().await;
}
