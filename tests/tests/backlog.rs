//! The true backlog (`Client::backlog`, the worker's `mindora_queue_backlog`): queued +
//! started + scheduled soon, with deferred jobs reported apart, on a real Redis.

use std::time::Duration;

use anyhow::Result;
use mindora_sdk::backlog::QueueBacklog;
use mindora_sdk::{Client, EnqueueOptions};
use mindora_tests::RedisDb;

#[tokio::test(flavor = "multi_thread")]
async fn backlog_counts_queued_started_and_due_jobs() -> Result<()> {
    let db = RedisDb::lease()?;
    let client = Client::connect(&db.url()).await?;
    let enqueue = |opts: EnqueueOptions| {
        let client = client.clone();
        async move {
            client
                .enqueue("lane", "mindora.noop", vec![], Default::default(), opts)
                .await
        }
    };
    let parent = enqueue(EnqueueOptions::default()).await?;
    enqueue(EnqueueOptions::default()).await?;
    enqueue(EnqueueOptions::default()).await?;
    enqueue(EnqueueOptions {
        depends_on: vec![parent.id.clone()],
        ..Default::default()
    })
    .await?;
    enqueue(EnqueueOptions {
        delay: Some(Duration::from_secs(10)),
        ..Default::default()
    })
    .await?;
    enqueue(EnqueueOptions {
        delay: Some(Duration::from_secs(86_400)),
        ..Default::default()
    })
    .await?;
    // One running execution, as a worker's claim leaves it in rq's started registry.
    let mut conn = db.conn()?;
    redis::cmd("ZADD")
        .arg("rq:wip:lane")
        .arg(chrono::Utc::now().timestamp() + 90)
        .arg("somejob:exec1")
        .exec(&mut conn)?;

    let got = client
        .backlog(&["lane".to_string(), "empty".to_string()])
        .await?;
    assert_eq!(
        got,
        vec![
            QueueBacklog {
                queue: "lane".into(),
                queued: 3,
                scheduled_due: 1,
                started: 1,
                deferred: 1,
            },
            QueueBacklog {
                queue: "empty".into(),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        got[0].total(),
        5,
        "deferred and far-future jobs are not in the sum"
    );
    Ok(())
}
