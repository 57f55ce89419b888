//! The end-to-end environment of the pipelines through the real `mindora-worker` binary and
//! Python rq: [`Services`] plus a Redis database of the test's own, the worker started with CLI
//! flags only, Python snippets run against rq, and the checks several tests share.

use std::ops::Deref;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{Services, AMQP_URL, PG_URL, REDIS_URL, S3_KEY, S3_SECRET};
use crate::{python_command, RedisDb, WorkerProcess};

/// [`Services`] and a Redis database, unique to one test.
pub struct Env {
    pub services: Services,
    pub db: RedisDb,
}

impl Deref for Env {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

/// Queue the worker listens on (the Redis database is the test's own).
pub const RQ_QUEUE: &str = "ai_processing_tasks";
pub const DIMS: u32 = 768;

impl Env {
    pub async fn new() -> Result<Env> {
        Ok(Env {
            services: Services::start("e2e", "user_notifications_e2e_").await,
            db: RedisDb::lease()?,
        })
    }

    pub fn collection(&self) -> String {
        format!("{}_documents", self.app)
    }

    /// The real `mindora-worker`, configured through its CLI flags only.
    pub fn start_worker(&self, name: &str) -> Result<WorkerProcess> {
        self.start_worker_with(name, &[])
    }

    /// [`Env::start_worker`] with extra environment variables (e.g. `OTEL_*`).
    pub fn start_worker_with(&self, name: &str, envs: &[(&str, &str)]) -> Result<WorkerProcess> {
        self.start_worker_args(name, &[], envs)
    }

    /// [`Env::start_worker_with`] with extra CLI flags (`--flag value` pairs); one of the usual
    /// flags given again replaces the usual value (e.g. `--chunk-size`).
    pub fn start_worker_args(
        &self,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<WorkerProcess> {
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
            S3_KEY,
            "--s3-secret-key",
            S3_SECRET,
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
            &self.queue,
            "--notify-redis-url",
            REDIS_URL,
            "--chunk-size",
            "400",
            "--chunk-overlap",
            "80",
        ];
        // clap refuses a flag given twice: an extra flag replaces the usual one and its value.
        let mut merged: Vec<&str> = Vec::new();
        for pair in args.chunks(2) {
            if !extra.contains(&pair[0]) {
                merged.extend_from_slice(pair);
            }
        }
        merged.extend_from_slice(extra);
        let args = merged;
        WorkerProcess::spawn(&self.db.url(), name, &args, envs)
    }

    /// Runs a Python snippet with rq `version`; `P` is `params` (a dict), and the snippet's last
    /// stdout line is parsed as JSON.
    pub fn python(&self, version: &str, params: Value, code: &str) -> Result<Value> {
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

    /// The next notification on this test's RabbitMQ queue (acknowledged), waiting up to 10 s.
    pub async fn notification(&self) -> Result<Value> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .context("RabbitMQ at 127.0.0.1:5672")?;
        let started = Instant::now();
        let mut ch = conn.create_channel().await?;
        let msg = loop {
            match ch
                .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
                .await
            {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                // 404 (the worker declares the queue with its first message) closes the channel.
                Err(_) => ch = conn.create_channel().await?,
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no notification on {} within 10 s", self.queue);
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
    pub async fn notify_queue_len(&self) -> Result<u32> {
        let conn =
            lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                self.queue.as_str().into(),
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

pub const PY_PRELUDE: &str = r#"
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

/// Stages in the order README.md gives; each observed sequence must follow it.
pub const STAGE_ORDER: &[&str] = &[
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

pub fn assert_stage_order(stages: &[String]) {
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

/// Every stage of a successful document run, in order, in the app's audit log.
pub async fn assert_full_audit_trail(
    pool: &sqlx::PgPool,
    schema: &str,
    doc_id: &str,
) -> Result<()> {
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
