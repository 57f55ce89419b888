//! Issue 5, end to end on this machine: Python rq enqueues `pipelines.*` jobs for objects in a
//! real S3 server (s3s-fs), the real `mindora-worker` binary runs them, and the PostgreSQL rows
//! (real server), the index requests (wire-checking Elasticsearch and Qdrant fakes), the
//! embeddings requests (OpenAI-compatible fake) and the notification on the real RabbitMQ (and
//! the app's Redis channel) are checked, as are the job's result, meta and failure as Python sees
//! them. A corrupt document among good ones, and the stages as a chain of dependent jobs.
//!
//! Needs `pipelines/tests/setup.sh` (s3s-fs), `tests/setup-python.sh` (rq venvs) and
//! `cargo build -p mindora-worker-app --bin mindora-worker` in the same target dir.

use anyhow::{Context, Result};
use mindora_tests::pipelines::e2e::{assert_full_audit_trail, Env, DIMS};
use mindora_tests::pipelines::{fixtures, long_pdf as pdf, pg};
use mindora_tests::RQ_VERSIONS;
use serde_json::json;
use sqlx::Row;

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
