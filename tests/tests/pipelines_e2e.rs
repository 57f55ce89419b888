//! Issue 5, end to end on this machine: Python rq enqueues `pipelines.*` jobs for objects in a
//! real S3 server (s3s-fs), the real `mindora-worker` binary runs them, and the PostgreSQL rows
//! (real server), the index requests (wire-checking Elasticsearch and Qdrant fakes), the
//! embeddings requests (OpenAI-compatible fake) and the notification on the real RabbitMQ (and
//! the app's Redis channel) are checked, as are the job's result, meta and failure as Python sees
//! them. A whole document and `job.meta` as it ends.
//!
//! Needs `pipelines/tests/setup.sh` (s3s-fs), `tests/setup-python.sh` (rq venvs) and
//! `cargo build -p mindora-worker-app --bin mindora-worker` in the same target dir.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use mindora_tests::pipelines::e2e::{
    assert_full_audit_trail, assert_stage_order, Env, DIMS, RQ_QUEUE,
};
use mindora_tests::pipelines::{long_pdf as pdf, pg, REDIS_URL};
use mindora_tests::RQ_VERSIONS;
use serde_json::{json, Value};
use sqlx::Row;

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
        assert_eq!(rv["notified"]["amqp_queue"], e.queue.as_str(), "{rv:#}");
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
