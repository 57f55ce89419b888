//! A handler that panics fails its job (with the panic message in `exc_string`) and the
//! worker goes on to the next job. Driven through the library API, so the test can register
//! a handler that panics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mindora_sdk::{Client, EnqueueOptions, JobStatus, SdkError, Serializer};
use mindora_tests::RedisDb;
use mindora_worker::config::RetryDefaults;
use mindora_worker::handler::{HandlerError, JobContext, Registry};
use mindora_worker::metrics::Health;
use mindora_worker::rq_store::{connect, RqStore};
use mindora_worker::runner::{RedisLoopConfig, RedisWorker};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

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

    let mut registry = Registry::new();
    mindora_worker::builtins::register(&mut registry);
    registry.register("test.panic", |_ctx: JobContext| async move {
        if true {
            panic!("handler exploded");
        }
        Ok::<Value, HandlerError>(Value::Null)
    });
    let url = db.url();
    let worker = RedisWorker::new(
        RedisLoopConfig {
            queues: vec!["default".into()],
            concurrency: 2,
            burst: true,
            shutdown_grace: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            recover_every: Duration::from_secs(15),
            abandon_grace_secs: 60,
            retry_defaults: RetryDefaults::default(),
        },
        Arc::new(registry),
        RqStore::new(connect(&url, Duration::from_secs(10)).await?, "w-panic"),
        connect(&url, Duration::from_secs(10)).await?,
        url.clone(),
        CancellationToken::new(),
        Arc::new(Health::default()),
        "test".into(),
    );
    tokio::time::timeout(Duration::from_secs(30), worker.run()).await?;

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
