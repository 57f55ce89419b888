//! The embeddable worker: the `custom_handlers` example (a binary of its own, built by
//! `Worker::from_env()?.handler(..).run()`) serves its handlers to Python-style rq
//! clients with the worker's flags, and the run-time handle resizes the budget and the
//! lanes of a running worker.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_sdk::{Client, EnqueueOptions, JobStatus, Serializer};
use mindora_tests::RedisDb;
use mindora_worker::Worker;
use serde_json::json;

/// The example binary, built next to the test binaries by `cargo test` / nextest.
fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("examples").join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} missing: build the examples",
        bin.display()
    );
    Ok(bin)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_binary_serves_its_own_handlers() -> Result<()> {
    let db = RedisDb::lease()?;
    let client = Client::connect(&db.url()).await?;
    let opts = EnqueueOptions {
        serializer: Serializer::Json,
        ..Default::default()
    };
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("height".into(), json!(480));
    let resized = client
        .enqueue(
            "images",
            "myapp.resize",
            vec![json!(640)],
            kwargs,
            opts.clone(),
        )
        .await?;
    let origin = client
        .enqueue(
            "images",
            "myapp.origin",
            vec![],
            Default::default(),
            opts.clone(),
        )
        .await?;
    let echo = client
        .enqueue(
            "images",
            "mindora.echo",
            vec![json!(1)],
            Default::default(),
            opts,
        )
        .await?;
    let status = Command::new(example("custom_handlers")?)
        .args(["--redis-url", &db.url(), "--queues", "images", "--burst"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "example exited with {status}");
    let value = client.wait(&resized, Duration::from_secs(5)).await?;
    assert_eq!(value, json!({"width": 640, "height": 480, "attempt": 1}));
    let value = client.wait(&origin, Duration::from_secs(5)).await?;
    assert_eq!(value["queue"], json!("images"));
    assert_eq!(value["source"], json!("redis"));
    assert_eq!(value["serializer"], json!("rq.serializers.JSONSerializer"));
    assert_eq!(value["timeout_secs"], json!(180));
    assert_eq!(client.status(&echo.id).await?, JobStatus::Finished);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handle_resizes_the_budget_and_replaces_the_lanes() -> Result<()> {
    let db = RedisDb::lease()?;
    let client = Client::connect(&db.url()).await?;
    let url = db.url();
    let worker = Worker::from_arg_list([
        "--redis-url",
        url.as_str(),
        "--name",
        "w-handle",
        "--queues",
        "first",
        "--concurrency",
        "2",
    ])?
    .handle_signals(false);
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());
    handle.set_concurrency(5);
    assert_eq!(handle.concurrency(), 5);
    assert!(
        !handle.set_lanes(vec![" ".into()]),
        "empty lanes are refused"
    );
    assert!(handle.set_lanes(vec!["second".into()]));
    let job = client
        .enqueue(
            "second",
            "mindora.echo",
            vec![json!("moved")],
            Default::default(),
            EnqueueOptions {
                serializer: Serializer::Json,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        client.wait(&job, Duration::from_secs(10)).await?,
        json!({"args": ["moved"], "kwargs": {}})
    );
    // The rq registration follows the lanes.
    let mut conn = db.conn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let queues: Option<String> = redis::cmd("HGET")
            .arg("rq:worker:w-handle")
            .arg("queues")
            .query(&mut conn)?;
        if queues.as_deref() == Some("second") {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "queues still {queues:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(20), running).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_handler_sees_the_raw_job_and_returns_serialized_values_or_tracebacks(
) -> Result<()> {
    use mindora_worker::handler::{HandlerError, JobContext, Output};
    let db = RedisDb::lease()?;
    let client = Client::connect(&db.url()).await?;
    let opts = EnqueueOptions {
        serializer: Serializer::Json,
        ..Default::default()
    };
    let ok = client
        .enqueue(
            "pool",
            "app.tasks.add",
            vec![json!(2), json!(3)],
            Default::default(),
            opts.clone(),
        )
        .await?;
    let bad = client
        .enqueue("pool", "app.tasks.boom", vec![], Default::default(), opts)
        .await?;
    let url = db.url();
    Worker::from_arg_list(["--redis-url", url.as_str(), "--queues", "pool", "--burst"])?
        .handle_signals(false)
        .fallback(|ctx: JobContext| async move {
            let raw = ctx.raw().cloned().expect("rq jobs carry their raw form");
            assert!(!raw.data.is_empty());
            if ctx.function == "app.tasks.add" {
                // As a Python process would answer: bytes in the job's serializer.
                let sum: i64 = ctx.args.iter().filter_map(|a| a.as_i64()).sum();
                Ok(Output::Serialized(sum.to_string().into_bytes()))
            } else {
                Err(HandlerError::retryable("ValueError", "boom").with_exc_string(
                    "Traceback (most recent call last):\n  File \"tasks.py\", line 3\nValueError: boom\n",
                ))
            }
        })
        .run()
        .await?;
    assert_eq!(client.wait(&ok, Duration::from_secs(5)).await?, json!(5));
    match client.wait(&bad, Duration::from_secs(5)).await {
        Err(mindora_sdk::SdkError::JobFailed { message, .. }) => {
            assert!(message.contains("File \"tasks.py\", line 3"), "{message}");
        }
        other => panic!("expected a failed job, got {other:?}"),
    }
    Ok(())
}
