//! Issue 5, end to end on this machine: Python rq enqueues `pipelines.*` jobs for objects in a
//! real S3 server (s3s-fs), the real `mindora-worker` binary runs them, and the PostgreSQL rows
//! (real server), the index requests (wire-checking Elasticsearch and Qdrant fakes), the
//! embeddings requests (OpenAI-compatible fake) and the notification on the real RabbitMQ (and
//! the app's Redis channel) are checked, as are the job's result, meta and failure as Python sees
//! them.
//!
//! Needs `pipelines/tests/setup.sh` (s3s-fs), `tests/setup-python.sh` (rq venvs) and
//! `cargo build -p mindora-app --bin mindora-worker` in the same target dir.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use mindora_tests::pipelines::{
    self as common, fakes, fixtures, S3Server, AMQP_URL, PG_URL, REDIS_URL,
};
use mindora_tests::{python_command, RedisDb, WorkerProcess, RQ_VERSIONS};
use serde_json::{json, Value};
use sqlx::Row;

/// Everything one test needs, unique to it: app (PostgreSQL schema, ES indices, Qdrant
/// collection), bucket, notification queue, its own S3 server and fakes, and a Redis database.
struct Env {
    s3: S3Server,
    openai: fakes::FakeOpenAi,
    es: fakes::FakeElastic,
    qdrant: fakes::FakeQdrant,
    app: String,
    bucket: String,
    notify_queue: String,
    db: RedisDb,
    _cleanup: Cleanup,
}

/// Drops the app's schema and deletes the notification queue, also when the test panics.
struct Cleanup {
    schema: String,
    queue: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let queue = self.queue.clone();
        // Own thread and runtime: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(PG_URL)
                    .await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                }
                if let Ok(conn) =
                    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                        .await
                {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(queue.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = conn.close(200, "bye".into()).await;
                }
            });
        })
        .join();
    }
}

/// Queue the worker listens on (the Redis database is the test's own).
const RQ_QUEUE: &str = "ai_processing_tasks";
const DIMS: u32 = 768;

impl Env {
    async fn new() -> Result<Env> {
        let app = common::unique("e2e");
        let notify_queue = common::unique("user_notifications_e2e_");
        let cleanup = Cleanup {
            schema: format!("mindora_{app}"),
            queue: notify_queue.clone(),
        };
        Ok(Env {
            s3: S3Server::start().await,
            openai: fakes::openai().await,
            es: fakes::elastic().await,
            qdrant: fakes::qdrant().await,
            bucket: format!("b-{app}"),
            app,
            notify_queue,
            db: RedisDb::lease()?,
            _cleanup: cleanup,
        })
    }

    fn schema(&self) -> String {
        format!("mindora_{}", self.app)
    }

    fn collection(&self) -> String {
        format!("{}_documents", self.app)
    }

    /// The real `mindora-worker`, configured through its CLI flags only.
    fn start_worker(&self, name: &str) -> Result<WorkerProcess> {
        let dims = DIMS.to_string();
        let model = format!("fake-embed-{DIMS}");
        let args = [
            "--queues",
            RQ_QUEUE,
            "--concurrency",
            "2",
            "--database-url",
            PG_URL,
            "--apps",
            &self.app,
            "--s3-endpoint",
            &self.s3.endpoint,
            "--s3-access-key",
            common::S3_KEY,
            "--s3-secret-key",
            common::S3_SECRET,
            "--embed-base-url",
            &self.openai.url,
            "--embed-api-key",
            "sk-test",
            "--embed-model",
            &model,
            "--embed-dimensions",
            &dims,
            "--embed-batch-size",
            "8",
            "--elasticsearch-url",
            &self.es.url,
            "--qdrant-url",
            &self.qdrant.url,
            "--notify-amqp-url",
            AMQP_URL,
            "--notify-queue",
            &self.notify_queue,
            "--notify-redis-url",
            REDIS_URL,
            "--chunk-size",
            "400",
            "--chunk-overlap",
            "80",
        ];
        WorkerProcess::start(&self.db, name, &args)
    }

    /// Runs a Python snippet with rq `version`; `P` is `params` (a dict), and the snippet's last
    /// stdout line is parsed as JSON.
    fn python(&self, version: &str, params: Value, code: &str) -> Result<Value> {
        let mut params = params;
        params["queue"] = json!(RQ_QUEUE);
        params["app"] = json!(self.app);
        params["bucket"] = json!(self.bucket);
        let out = python_command(version, &self.db)?
            .env("E2E_PARAMS", params.to_string())
            .arg("-c")
            .arg(format!("{PY_PRELUDE}{code}"))
            .output()
            .context("starting python")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "python (rq {version}) failed ({}):\n--- script\n{code}\n--- stdout\n{stdout}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("python printed {stdout:?}"))
    }

    fn assert_no_violations(&self) {
        let o = self.openai.state.lock().unwrap();
        assert!(o.violations.is_empty(), "OpenAI: {:?}", o.violations);
        let e = self.es.state.lock().unwrap();
        assert!(e.violations.is_empty(), "Elasticsearch: {:?}", e.violations);
        let q = self.qdrant.state.lock().unwrap();
        assert!(q.violations.is_empty(), "Qdrant: {:?}", q.violations);
    }

    /// The next notification on this test's RabbitMQ queue (acknowledged), waiting up to 10 s.
    async fn notification(&self) -> Result<Value> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .context("RabbitMQ at 127.0.0.1:5672")?;
        let started = Instant::now();
        let mut ch = conn.create_channel().await?;
        let msg = loop {
            match ch
                .basic_get(
                    self.notify_queue.as_str().into(),
                    BasicGetOptions::default(),
                )
                .await
            {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                // 404 (the worker declares the queue with its first message) closes the channel.
                Err(_) => ch = conn.create_channel().await?,
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no notification on {} within 10 s", self.notify_queue);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let props = msg.delivery.properties.clone();
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json"),
            "notification content type"
        );
        assert_eq!(
            *props.delivery_mode(),
            Some(2),
            "notifications must be persistent"
        );
        let v: Value = serde_json::from_slice(&msg.delivery.data)?;
        msg.delivery.ack(BasicAckOptions::default()).await?;
        let _ = conn.close(200, "bye".into()).await;
        Ok(v)
    }

    /// Messages waiting on the notification queue.
    async fn notify_queue_len(&self) -> Result<u32> {
        let conn =
            lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                self.notify_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        let _ = conn.close(200, "bye".into()).await;
        Ok(q.message_count())
    }
}

const PY_PRELUDE: &str = r#"
import os, json, time, redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
P = json.loads(os.environ["E2E_PARAMS"])
r = redis.Redis.from_url(os.environ["REDIS_URL"])
q = Queue(P["queue"], connection=r)
KW = dict(app=P["app"], bucket=P["bucket"])

def status(job, refresh=True):
    s = job.get_status(refresh=refresh)
    return getattr(s, "value", s)

def watch(job, timeout=120):
    """Polls job.refresh(); job.meta until the job ends; returns (status, distinct metas seen)."""
    seen, deadline = [], time.time() + timeout
    while True:
        job.refresh()  # one HGETALL: status and meta of the same moment
        st = status(job, refresh=False)
        meta = dict(job.meta)
        if meta and (not seen or seen[-1]["meta"] != meta):
            seen.append({"status": st, "meta": meta})
        if st in ("finished", "failed"):
            return st, seen
        assert time.time() < deadline, ("job did not end", job.id, st, meta)
        time.sleep(0.005)

def settled_meta(job):
    """job.meta as Python reads it once the job has ended: the worker saves meta before it
    records the outcome (as rq does), so it is final at once."""
    job.refresh()
    return job.meta

def outcome(job):
    res = job.latest_result()
    return {"status": status(job), "meta": settled_meta(job), "worker": job.worker_name,
            "return_value": job.return_value(),
            "exc": res.exc_string if res is not None else None,
            "result_type": getattr(res.type, "name", str(res.type)) if res is not None else None}
"#;

fn pdf(pages: usize) -> Vec<u8> {
    fixtures::pdf(
        &(1..=pages)
            .map(|p| fixtures::prose_page(p, 12))
            .collect::<Vec<_>>(),
    )
}

async fn pg() -> sqlx::PgPool {
    common::pg().await
}

/// Stages in the order README.md gives; each observed sequence must follow it.
const STAGE_ORDER: &[&str] = &[
    "fetch",
    "extract",
    "chunk",
    "embed",
    "index_fulltext",
    "index_vectors",
    "analyze",
    "record",
    "notify",
    "done",
];

fn assert_stage_order(stages: &[String]) {
    let pos = |s: &String| {
        STAGE_ORDER
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("unknown stage {s} in {stages:?}"))
    };
    for w in stages.windows(2) {
        assert!(pos(&w[0]) <= pos(&w[1]), "stages out of order: {stages:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rq_process_document_through_the_rust_worker() -> Result<()> {
    let e = Env::new().await?;
    let mut w = e.start_worker("w-e2e-process")?;
    let redis = redis::Client::open(REDIS_URL)?;
    let mut pubsub = redis.get_async_pubsub().await?;
    pubsub
        .subscribe(format!("mindora:{}:notifications", e.app))
        .await?;
    let pool = pg().await;
    let s = e.schema();

    for version in RQ_VERSIONS {
        let key = format!("reports/q1-rq{}.pdf", version.replace('.', ""));
        let bytes = pdf(3);
        let size = bytes.len();
        e.s3.put(&e.bucket, &key, bytes).await;
        // Two transient failures of the embeddings API: the job retries inside the embed stage,
        // which also keeps it there long enough for Python to see its progress mid-run.
        e.openai.state.lock().unwrap().fail_with = [429, 500].into();
        let out = e.python(
            version,
            json!({"key": key}),
            r#"
job = q.enqueue("pipelines.process_document", key=P["key"], user_id="u-42",
                options={"metadata": {"team": "legal"}}, **KW)
st, seen = watch(job)
o = outcome(job)
o["seen"] = seen
o["finished_registry"] = job.id in FinishedJobRegistry(queue=q).get_job_ids()
print(json.dumps(o, default=str))
"#,
        )?;
        assert_eq!(out["status"], "finished", "rq {version}: {out:#}");
        assert_eq!(out["worker"], "w-e2e-process");
        assert_eq!(out["result_type"], "SUCCESSFUL");
        assert_eq!(out["finished_registry"], true);

        // job.return_value() is the pipeline's summary.
        let rv = &out["return_value"];
        let doc_id = rv["document_id"]
            .as_str()
            .context("document_id")?
            .to_string();
        let chunks = rv["chunks"].as_u64().context("chunks")?;
        assert!(chunks >= 3, "{rv:#}");
        assert_eq!(rv["status"], "done");
        assert_eq!(rv["app"], e.app.as_str());
        assert_eq!(rv["bucket"], e.bucket.as_str());
        assert_eq!(rv["key"], key.as_str());
        assert_eq!(rv["kind"], "pdf");
        assert_eq!(rv["pages"], 3);
        assert_eq!(rv["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(rv["size_bytes"], size);
        assert_eq!(rv["indexed"]["fulltext"]["indexed"], chunks);
        assert_eq!(rv["indexed"]["vectors"]["indexed"], chunks);
        assert_eq!(
            rv["notified"]["amqp_queue"],
            e.notify_queue.as_str(),
            "{rv:#}"
        );
        for stage in ["fetch", "extract", "chunk", "embed", "index", "record"] {
            assert!(
                rv["timings_ms"].get(stage).is_some(),
                "no {stage} timing: {rv:#}"
            );
        }

        // job.meta: stage progress seen while it ran, and its final state.
        let meta = &out["meta"];
        assert_eq!(meta["stage"], "done", "final meta {meta:#}");
        assert_eq!(meta["status"], "done");
        assert_eq!(meta["pipeline"], "pipelines.process_document");
        assert_eq!(meta["document_id"], doc_id.as_str());
        assert_eq!(meta["chunks"], chunks);
        assert_eq!(meta["embedded"], chunks);
        assert_eq!(meta["pages"], 3);
        assert_eq!(meta["kind"], "pdf");
        let seen = out["seen"].as_array().context("seen")?;
        let stages: Vec<String> = seen
            .iter()
            .filter_map(|m| m["meta"]["stage"].as_str().map(String::from))
            .collect();
        assert_stage_order(&stages);
        assert!(
            seen.iter()
                .any(|m| m["status"] == "started" && m["meta"]["stage"] == "embed"),
            "Python never saw the embed stage while the job ran: {seen:#?}"
        );

        // Index requests: one ES document and one Qdrant point per chunk.
        {
            let es = e.es.state.lock().unwrap();
            assert!(es.templates.contains_key(&format!("{}-documents", e.app)));
            let docs = es.docs_of(&doc_id);
            assert_eq!(docs.len() as u64, chunks);
            let month = chrono::Utc::now().format("%Y.%m").to_string();
            assert!(
                docs.iter()
                    .all(|(k, _)| k.starts_with(&format!("{}-documents-{month}/", e.app))),
                "{:?}",
                docs.iter().map(|d| &d.0).collect::<Vec<_>>()
            );
            assert!(docs.iter().all(|(_, d)| d["user_id"] == "u-42"
                && d["metadata"]["team"] == "legal"
                && d["key"] == key.as_str()));
        }
        {
            let qd = e.qdrant.state.lock().unwrap();
            assert_eq!(qd.collections.get(&e.collection()), Some(&(DIMS as u64)));
            assert_eq!(qd.points_of(&e.collection(), &doc_id) as u64, chunks);
        }

        // PostgreSQL rows.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT status, pages, chunks, kind, sha256, size_bytes, user_id, metadata, bucket, key, last_run_id::text AS run \
             FROM \"{s}\".documents WHERE id = $1::uuid"
        )))
        .bind(&doc_id)
        .fetch_one(&pool)
        .await?;
        assert_eq!(row.get::<String, _>("status"), "done");
        assert_eq!(row.get::<i32, _>("pages"), 3);
        assert_eq!(row.get::<i32, _>("chunks") as u64, chunks);
        assert_eq!(row.get::<String, _>("kind"), "pdf");
        assert_eq!(
            row.get::<String, _>("sha256"),
            rv["sha256"].as_str().unwrap()
        );
        assert_eq!(row.get::<String, _>("key"), key);
        assert_eq!(
            row.get::<Option<String>, _>("user_id").as_deref(),
            Some("u-42")
        );
        assert_eq!(row.get::<Value, _>("metadata"), json!({"team": "legal"}));
        assert_eq!(
            row.get::<Option<String>, _>("run").as_deref(),
            rv["run_id"].as_str()
        );
        assert_full_audit_trail(&pool, &s, &doc_id).await?;
        let run = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT job_id, queue, source, function, status FROM \"{s}\".processing_runs WHERE document_id = $1::uuid"
        )))
        .bind(&doc_id)
        .fetch_all(&pool)
        .await?;
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].get::<String, _>("queue"), RQ_QUEUE);
        assert_eq!(run[0].get::<String, _>("source"), "redis");
        assert_eq!(
            run[0].get::<String, _>("function"),
            "pipelines.process_document"
        );
        assert_eq!(run[0].get::<String, _>("status"), "succeeded");
        let job_id = run[0].get::<String, _>("job_id");
        let chunk_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{s}\".chunks WHERE document_id = $1::uuid"
        )))
        .bind(&doc_id)
        .fetch_one(&pool)
        .await?;
        // process_document keeps chunks in memory; only chained stages store them.
        assert!(
            chunk_rows == 0 || chunk_rows as u64 == chunks,
            "{chunk_rows}"
        );

        // The notification on the real RabbitMQ, and on the app's Redis channel.
        let msg = e.notification().await?;
        assert_eq!(msg["event"], "document.processed", "{msg:#}");
        assert_eq!(msg["app"], e.app.as_str());
        assert_eq!(msg["document_id"], doc_id.as_str());
        assert_eq!(msg["bucket"], e.bucket.as_str());
        assert_eq!(msg["key"], key.as_str());
        assert_eq!(msg["user_id"], "u-42");
        assert_eq!(msg["status"], "done");
        assert_eq!(msg["chunks"], chunks);
        assert_eq!(msg["pages"], 3);
        assert_eq!(msg["job_id"], job_id.as_str());
        let published = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .context("no Redis notification")?
            .context("pubsub closed")?;
        let published: Value = serde_json::from_str(&published.get_payload::<String>()?)?;
        assert_eq!(published["document_id"], doc_id.as_str());
        assert_eq!(published["event"], "document.processed");
    }
    assert_eq!(e.notify_queue_len().await?, 0, "one notification per job");
    let o = e.openai.state.lock().unwrap();
    assert!(o.fail_with.is_empty(), "the 429/500 were served");
    drop(o);
    e.assert_no_violations();
    assert!(w.alive());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pdf_fails_its_rq_job_and_the_worker_carries_on() -> Result<()> {
    let e = Env::new().await?;
    let mut corrupt = pdf(2);
    corrupt.truncate(corrupt.len() / 3);
    e.s3.put(&e.bucket, "inbox/broken.pdf", corrupt).await;
    e.s3.put(&e.bucket, "inbox/ok.pdf", pdf(1)).await;
    let mut w = e.start_worker("w-e2e-failure")?;
    let version = RQ_VERSIONS[RQ_VERSIONS.len() - 1];
    let out = e.python(
        version,
        json!({}),
        r#"
from rq import Retry
# A retry policy that a permanent failure (bad input) must not use.
bad = q.enqueue("pipelines.process_document", key="inbox/broken.pdf", user_id="u-7",
                retry=Retry(max=2, interval=1), **KW)
good = q.enqueue("pipelines.process_document", key="inbox/ok.pdf", user_id="u-7", **KW)
watch(bad)
watch(good)
bad.refresh()
print(json.dumps({"bad": outcome(bad), "good": outcome(good),
                  "failed_registry": FailedJobRegistry(queue=q).get_job_ids(),
                  "retries_left": bad.retries_left, "bad_id": bad.id}, default=str))
"#,
    )?;
    let bad = &out["bad"];
    assert_eq!(bad["status"], "failed", "{out:#}");
    assert_eq!(bad["result_type"], "FAILED");
    let exc = bad["exc"].as_str().context("exc_string")?;
    assert!(
        exc.contains("broken.pdf: the PDF is corrupt"),
        "the failure must name the file: {exc}"
    );
    assert_eq!(out["failed_registry"], json!([out["bad_id"]]));
    assert_eq!(
        out["retries_left"], 2,
        "a corrupt document is not retried: {out:#}"
    );
    assert_eq!(bad["meta"]["stage"], "failed", "{:#}", bad["meta"]);
    assert!(bad["meta"]["error"]
        .as_str()
        .is_some_and(|m| m.contains("broken.pdf")));
    // The worker lived on and ran the next document.
    assert_eq!(out["good"]["status"], "finished", "{out:#}");
    assert_eq!(out["good"]["return_value"]["status"], "done");
    assert!(w.alive(), "the worker must survive a corrupt document");

    // Recorded as failed in PostgreSQL, notified as failed on RabbitMQ.
    let pool = pg().await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT key, status, error, error_kind FROM \"{}\".documents ORDER BY key",
        e.schema()
    )))
    .fetch_all(&pool)
    .await?;
    let got: Vec<(String, String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.get("key"),
                r.get("status"),
                r.get("error"),
                r.get("error_kind"),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "inbox/broken.pdf");
    assert_eq!(got[0].1, "failed");
    assert!(got[0]
        .2
        .as_deref()
        .is_some_and(|m| m.contains("broken.pdf")));
    assert_eq!(got[0].3.as_deref(), Some("corrupt_document"));
    assert_eq!(
        (got[1].0.as_str(), got[1].1.as_str()),
        ("inbox/ok.pdf", "done")
    );
    // The two jobs may run at once: take both notifications, then match them by key.
    let mut msgs = vec![e.notification().await?, e.notification().await?];
    msgs.sort_by_key(|m| m["key"].as_str().unwrap_or_default().to_string());
    let (failed, ok) = (&msgs[0], &msgs[1]);
    assert_eq!(failed["key"], "inbox/broken.pdf", "{msgs:#?}");
    assert_eq!(failed["event"], "document.failed", "{failed:#}");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["user_id"], "u-7");
    assert_eq!(failed["error_kind"], "corrupt_document");
    assert_eq!(failed["retryable"], false);
    assert!(failed["error"]
        .as_str()
        .is_some_and(|m| m.contains("broken.pdf")));
    assert_eq!(ok["key"], "inbox/ok.pdf");
    assert_eq!(ok["event"], "document.processed", "{ok:#}");
    // Nothing of the corrupt document reached the indices.
    {
        let es = e.es.state.lock().unwrap();
        let all: usize = es.indices.values().map(|i| i.len()).sum();
        assert_eq!(
            all as u64,
            out["good"]["return_value"]["chunks"].as_u64().unwrap()
        );
    }
    e.assert_no_violations();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_dependent_rq_jobs_runs_stage_by_stage() -> Result<()> {
    let e = Env::new().await?;
    let key = "notes/memo.docx";
    let docx = fixtures::docx(&[
        "Budget approved for the new office.",
        "预算已批准。我们三月搬家。",
        "The move is planned for March; every team lead confirms the seating plan by Friday.",
    ]);
    e.s3.put(&e.bucket, key, docx).await;
    let version = RQ_VERSIONS[0];
    // Enqueued before the worker starts, so the dependents are seen deferred.
    let enq = e.python(
        version,
        json!({"key": key}),
        r#"
kw = dict(key=P["key"], user_id="u-9", **KW)
prev, out = None, {}
for stage in ("extract", "chunk", "embed", "index", "record", "notify"):
    prev = q.enqueue("pipelines." + stage, depends_on=prev, job_id="chain-" + stage, **kw)
    out[stage] = status(prev)
print(json.dumps(out))
"#,
    )?;
    let _w = e.start_worker("w-e2e-chain")?;
    let out = e.python(
        version,
        json!({}),
        r#"
stages = ("extract", "chunk", "embed", "index", "record", "notify")
jobs = {s: Job.fetch("chain-" + s, connection=r) for s in stages}
watch(jobs["notify"], timeout=180)
for j in jobs.values():
    j.refresh()
print(json.dumps({"jobs": {s: outcome(j) for s, j in jobs.items()},
                  "in_order": [jobs[b].started_at >= jobs[a].ended_at
                               for a, b in zip(stages, stages[1:])]}, default=str))
"#,
    )?;
    assert_eq!(enq["extract"], "queued", "{enq:#}");
    for s in ["chunk", "embed", "index", "record", "notify"] {
        assert_eq!(enq[s], "deferred", "{s}: {enq:#}");
    }
    let jobs = &out["jobs"];
    let stages = ["extract", "chunk", "embed", "index", "record", "notify"];
    for s in stages {
        assert_eq!(jobs[s]["status"], "finished", "{s}: {:#}", jobs[s]);
        assert_eq!(jobs[s]["meta"]["pipeline"], format!("pipelines.{s}"));
    }
    // Each started after its dependency ended.
    assert_eq!(
        out["in_order"],
        json!([true, true, true, true, true]),
        "{out:#}"
    );
    let doc_id = jobs["extract"]["return_value"]["document_id"]
        .as_str()
        .context("document_id")?
        .to_string();
    for s in stages {
        assert_eq!(
            jobs[s]["return_value"]["document_id"],
            doc_id.as_str(),
            "{s}"
        );
    }
    assert_eq!(jobs["extract"]["return_value"]["kind"], "docx");
    let n = jobs["chunk"]["return_value"]["chunks"]
        .as_u64()
        .context("chunks")?;
    assert!(n >= 1);
    assert_eq!(jobs["embed"]["return_value"]["dimensions"], DIMS);

    // Each stage's output is in PostgreSQL for the next one.
    let pool = pg().await;
    let s = e.schema();
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT text FROM \"{s}\".document_texts WHERE document_id = $1::uuid"
    )))
    .bind(&doc_id)
    .fetch_one(&pool)
    .await?;
    assert!(
        text.contains("预算已批准") && text.contains("Budget approved"),
        "{text}"
    );
    let (chunk_rows, embedded): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE cardinality(embedding) = {DIMS}) FROM \"{s}\".chunks WHERE document_id = $1::uuid"
    )))
    .bind(&doc_id)
    .fetch_one(&pool)
    .await?;
    assert_eq!((chunk_rows as u64, embedded as u64), (n, n));
    let status: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM \"{s}\".documents WHERE id = $1::uuid"
    )))
    .bind(&doc_id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "done");
    assert_full_audit_trail(&pool, &s, &doc_id).await?;
    let runs = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT function, job_id, status FROM \"{s}\".processing_runs WHERE document_id = $1::uuid ORDER BY started_at"
    )))
    .bind(&doc_id)
    .fetch_all(&pool)
    .await?;
    let runs: Vec<(String, String, String)> = runs
        .iter()
        .map(|r| (r.get("function"), r.get("job_id"), r.get("status")))
        .collect();
    let want: Vec<(String, String, String)> = stages
        .iter()
        .map(|s| {
            (
                format!("pipelines.{s}"),
                format!("chain-{s}"),
                "succeeded".to_string(),
            )
        })
        .collect();
    assert_eq!(runs, want);

    // Index requests, and the notification from the last job.
    assert_eq!(e.es.state.lock().unwrap().docs_of(&doc_id).len() as u64, n);
    assert_eq!(
        e.qdrant
            .state
            .lock()
            .unwrap()
            .points_of(&e.collection(), &doc_id) as u64,
        n
    );
    let msg = e.notification().await?;
    assert_eq!(msg["event"], "document.processed", "{msg:#}");
    assert_eq!(msg["document_id"], doc_id.as_str());
    assert_eq!(msg["status"], "done");
    assert_eq!(msg["user_id"], "u-9");
    assert_eq!(msg["job_id"], "chain-notify");
    e.assert_no_violations();
    Ok(())
}

/// rq semantics: a job saves its `meta` before its status becomes finished/failed, so Python
/// reading an ended job sees the final progress, and a `result_ttl=0` job leaves no hash behind.
/// Regression test: mindora-worker once wrote meta from a detached task nothing waited for, so
/// Python could see `status=finished` with a stale stage, and the last meta HSET of a
/// `result_ttl=0` job re-created `rq:job:<id>` after finish.lua's DEL (a leaked key per job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_meta_is_final_when_the_job_ends() -> Result<()> {
    let e = Env::new().await?;
    for i in 0..6 {
        e.s3.put(&e.bucket, &format!("m/{i}.pdf"), pdf(1)).await;
    }
    let _w = e.start_worker("w-e2e-meta")?;
    let out = e.python(
        RQ_VERSIONS[0],
        json!({}),
        r#"
stale = []
for i in range(5):
    job = q.enqueue("pipelines.process_document", key=f"m/{i}.pdf", **KW)
    st, seen = watch(job)
    stale.append(seen[-1]["meta"].get("stage"))
gone = q.enqueue("pipelines.process_document", key="m/5.pdf", result_ttl=0, job_id="ttl0", **KW)
deadline = time.time() + 20
while r.exists("rq:job:ttl0") or r.zscore(f"rq:wip:{q.name}", "ttl0") is not None:
    # rq deletes the hash of a result_ttl=0 job when it finishes
    if time.time() > deadline:
        break
    time.sleep(0.01)
time.sleep(1.0)
import pickle
left = {k.decode(): (pickle.loads(v) if k == b"meta" else v.decode(errors="replace")) for k, v in r.hgetall("rq:job:ttl0").items()}
print(json.dumps({"stages_when_finished": stale, "ttl0_hash": left, "ttl0_ttl": r.ttl("rq:job:ttl0")}))
"#,
    )?;
    assert_eq!(
        out["stages_when_finished"],
        json!(["done", "done", "done", "done", "done"]),
        "{out:#}"
    );
    assert_eq!(out["ttl0_hash"], json!({}), "{out:#}");
    Ok(())
}

/// Every stage of a successful document run, in order, in the app's audit log.
async fn assert_full_audit_trail(pool: &sqlx::PgPool, schema: &str, doc_id: &str) -> Result<()> {
    let audit: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_status FROM \"{schema}\".audit_log WHERE document_id = $1::uuid ORDER BY id"
    )))
    .bind(doc_id)
    .fetch_all(pool)
    .await?;
    assert_eq!(
        audit,
        [
            "fetched",
            "extracted",
            "chunked",
            "embedded",
            "indexed",
            "done"
        ]
    );
    Ok(())
}
