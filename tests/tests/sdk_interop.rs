//! mindora-sdk enqueues: a real Python `rq worker` and mindora-worker both run the jobs,
//! and the SDK reads back what each of them recorded.

use std::time::Duration;

use anyhow::Result;
use mindora_sdk::{Client, EnqueueOptions, JobStatus, RetryPolicy, SdkError, Serializer};
use mindora_tests::{python_command, run_python, RedisDb, WorkerProcess, RQ_VERSIONS};
use serde_json::{json, Map, Value};

fn kwargs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_jobs_run_on_a_python_rq_worker() -> Result<()> {
    for version in RQ_VERSIONS {
        for serializer in [Serializer::Pickle, Serializer::Json] {
            let db = RedisDb::lease()?;
            let client = Client::connect(&db.url()).await?;
            let opts = |id: &str| EnqueueOptions {
                job_id: Some(id.into()),
                serializer,
                ..Default::default()
            };
            let ok = client
                .enqueue(
                    "default",
                    "jobs.add",
                    vec![json!(2)],
                    kwargs(json!({"y": 40})),
                    opts("ok"),
                )
                .await?;
            let bad = client
                .enqueue(
                    "default",
                    "jobs.boom",
                    vec![json!("from rust")],
                    Map::new(),
                    opts("bad"),
                )
                .await?;
            let child = client
                .enqueue(
                    "default",
                    "jobs.echo",
                    vec![json!("child")],
                    Map::new(),
                    EnqueueOptions {
                        depends_on: vec!["ok".into()],
                        ..opts("child")
                    },
                )
                .await?;
            assert_eq!(child.status, JobStatus::Deferred);
            let ser_flag = match serializer {
                Serializer::Pickle => "rq.serializers.DefaultSerializer",
                Serializer::Json => "rq.serializers.JSONSerializer",
            };
            let out = python_command(version, &db)?
                .args([
                    "-m",
                    "rq.cli",
                    "worker",
                    "--burst",
                    "-w",
                    "rq.worker.SimpleWorker",
                    "--serializer",
                    ser_flag,
                    "--url",
                ])
                .arg(db.url())
                .arg("default")
                .output()?;
            assert!(
                out.status.success(),
                "rq worker: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let value = client.wait(&ok, Duration::from_secs(5)).await?;
            assert_eq!(value, json!({"sum": 42}), "rq {version} {serializer:?}");
            match client.wait(&bad, Duration::from_secs(5)).await {
                Err(SdkError::JobFailed {
                    status, message, ..
                }) => {
                    assert_eq!(status, "failed");
                    assert!(message.contains("ValueError: from rust"), "{message}");
                }
                other => panic!("expected failure, got {other:?}"),
            }
            // rq 3.0 moves ready dependents through its own registry; both end queued or run.
            let st = client.status("child").await?;
            assert!(
                matches!(st, JobStatus::Finished | JobStatus::Queued),
                "child is {st}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_jobs_run_on_mindora_worker_with_every_option() -> Result<()> {
    let db = RedisDb::lease()?;
    let _w = WorkerProcess::start(
        &db,
        "w-sdk",
        &["--queues", "high,default", "--concurrency", "8"],
    )?;
    let client = Client::connect(&db.url()).await?;
    let echo = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![json!(1), json!("x")],
            kwargs(json!({"k": [true, null]})),
            EnqueueOptions {
                serializer: Serializer::Json,
                result_ttl_secs: Some(60),
                meta: kwargs(json!({"origin": "rust"})),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        client.wait(&echo, Duration::from_secs(10)).await?,
        json!({"args": [1, "x"], "kwargs": {"k": [true, null]}})
    );
    let delayed = client
        .enqueue(
            "high",
            "mindora.echo",
            vec![],
            Map::new(),
            EnqueueOptions {
                delay: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(delayed.status, JobStatus::Scheduled);
    client.wait(&delayed, Duration::from_secs(10)).await?;
    let retried = client
        .enqueue(
            "default",
            "mindora.fail",
            vec![json!("nope")],
            Map::new(),
            EnqueueOptions {
                retry: Some(RetryPolicy::Exponential {
                    max_attempts: 3,
                    base_secs: 0.0,
                    factor: 2.0,
                    cap_secs: 0.0,
                    jitter: 0.0,
                }),
                ..Default::default()
            },
        )
        .await?;
    let err = client.wait(&retried, Duration::from_secs(10)).await;
    assert!(matches!(err, Err(SdkError::JobFailed { .. })), "{err:?}");
    let mut conn = db.conn()?;
    let runs: i64 = redis::cmd("XLEN")
        .arg(format!("rq:results:{}", retried.id))
        .query(&mut conn)?;
    assert_eq!(runs, 1, "only the final failure is a result entry, as rq");
    let fails: i64 = redis::cmd("HGET")
        .arg("rq:worker:w-sdk")
        .arg("failed_job_count")
        .query(&mut conn)?;
    assert_eq!(fails, 3);
    let timed = client
        .enqueue(
            "default",
            "mindora.sleep",
            vec![json!(5)],
            Map::new(),
            EnqueueOptions {
                timeout_secs: Some(1),
                ..Default::default()
            },
        )
        .await?;
    match client.wait(&timed, Duration::from_secs(10)).await {
        Err(SdkError::JobFailed { message, .. }) => {
            assert!(message.contains("timeout"), "{message}")
        }
        other => panic!("expected timeout, got {other:?}"),
    }
    // Cancel before it runs: park it behind a deferred dependency.
    let parent = client
        .enqueue(
            "default",
            "mindora.sleep",
            vec![json!(2)],
            Map::new(),
            EnqueueOptions::default(),
        )
        .await?;
    let doomed = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![],
            Map::new(),
            EnqueueOptions {
                depends_on: vec![parent.id.clone()],
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(client.cancel(&doomed.id).await?, Some(JobStatus::Deferred));
    assert_eq!(client.status(&doomed.id).await?, JobStatus::Canceled);
    Ok(())
}

#[test]
fn high_lane_runs_before_a_full_low_lane() -> Result<()> {
    let db = RedisDb::lease()?;
    run_python(
        "3.0",
        &db,
        r#"
low = Queue("low", connection=r)
for i in range(500):
    low.enqueue("mindora.sleep", 0.01, job_id=f"low-{i}")
"#,
    )?;
    let _w = WorkerProcess::start(
        &db,
        "w-prio",
        &["--queues", "high,low", "--concurrency", "1"],
    )?;
    let mut conn = db.conn()?;
    mindora_tests::wait_for(Duration::from_secs(20), "low lane to start", || {
        Ok(mindora_tests::status(&mut conn, "low-3")?.filter(|s| s == "finished"))
    })?;
    run_python(
        "3.0",
        &db,
        r#"
Queue("high", connection=r).enqueue("mindora.echo", job_id="urgent")
"#,
    )?;
    mindora_tests::wait_statuses(
        &db,
        &["urgent".to_string()],
        &["finished"],
        Duration::from_secs(20),
    )?;
    let left: i64 = redis::cmd("LLEN").arg("rq:queue:low").query(&mut conn)?;
    assert!(
        left > 100,
        "urgent job ran while the low lane still held {left} jobs"
    );
    Ok(())
}

#[test]
fn ten_worker_processes_run_every_job_exactly_once() -> Result<()> {
    let db = RedisDb::lease()?;
    let n = 2000;
    run_python(
        "3.0",
        &db,
        &format!(
            r#"
q = Queue("default", connection=r)
with r.pipeline() as p:
    for i in range({n}):
        q.enqueue("mindora.echo", i, job_id=f"j{{i}}", pipeline=p)
    p.execute()
"#
        ),
    )?;
    let workers: Vec<WorkerProcess> = (0..10)
        .map(|i| WorkerProcess::start(&db, &format!("w-fleet-{i}"), &["--concurrency", "4"]))
        .collect::<Result<_>>()?;
    let ids: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    mindora_tests::wait_statuses(&db, &ids, &["finished"], Duration::from_secs(120))?;
    mindora_tests::assert_each_ran_once(&db, &ids, &workers)?;
    Ok(())
}

#[test]
fn ten_workers_move_each_scheduled_job_exactly_once() -> Result<()> {
    let db = RedisDb::lease()?;
    let n = 300;
    run_python(
        "3.0",
        &db,
        &format!(
            r#"
from datetime import timedelta
q = Queue("default", connection=r)
with r.pipeline() as p:
    for i in range({n}):
        q.enqueue_in(timedelta(seconds=1), "mindora.echo", i, job_id=f"s{{i}}", pipeline=p)
    p.execute()
assert len(q.scheduled_job_registry) == {n}
"#
        ),
    )?;
    let workers: Vec<WorkerProcess> = (0..10)
        .map(|i| WorkerProcess::start(&db, &format!("w-sched-{i}"), &["--concurrency", "4"]))
        .collect::<Result<_>>()?;
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    mindora_tests::wait_statuses(&db, &ids, &["finished"], Duration::from_secs(60))?;
    mindora_tests::assert_each_ran_once(&db, &ids, &workers)?;
    let mut conn = db.conn()?;
    let left: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut conn)?;
    assert_eq!(left, 0, "no duplicate ids left in the queue");
    Ok(())
}
