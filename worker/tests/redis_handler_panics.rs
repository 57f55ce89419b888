//! A handler that panics fails its job (with the panic message in `exc_string`) and the
//! worker goes on to the next job. Driven through the library API, so the test can register
//! a handler that panics.

use std::time::Duration;

use anyhow::Result;
use mindora_sdk::{Client, EnqueueOptions, JobStatus, SdkError, Serializer};
use mindora_tests::RedisDb;
use mindora_worker::handler::{HandlerError, JobContext};
use mindora_worker::Worker;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_fails_its_job_and_the_worker_goes_on() -> Result<()> {
    let db = RedisDb::lease()?;
    let client = Client::connect(&db.url()).await?;
    let opts = EnqueueOptions {
        serializer: Serializer::Json,
        ..Default::default()
    };
    let bad = client
        .enqueue(
            "default",
            "test.panic",
            vec![],
            Default::default(),
            opts.clone(),
        )
        .await?;
    let good = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![json!("after")],
            Default::default(),
            opts,
        )
        .await?;

    let url = db.url();
    let worker = Worker::from_arg_list([
        "--redis-url",
        url.as_str(),
        "--name",
        "w-panic",
        "--concurrency",
        "2",
        "--burst",
        "--heartbeat-secs",
        "1",
    ])?
    .handle_signals(false)
    .handler("test.panic", |_ctx: JobContext| async move {
        if true {
            panic!("handler exploded");
        }
        Ok::<Value, HandlerError>(Value::Null)
    });
    tokio::time::timeout(Duration::from_secs(30), worker.run()).await??;

    match client.wait(&bad, Duration::from_secs(1)).await {
        Err(SdkError::JobFailed {
            status, message, ..
        }) => {
            assert_eq!(status, "failed");
            assert!(
                message.contains("HandlerPanic: handler panicked: handler exploded"),
                "{message}"
            );
        }
        other => panic!("expected a failed job, got {other:?}"),
    }
    assert_eq!(client.status(&good.id).await?, JobStatus::Finished);
    Ok(())
}
