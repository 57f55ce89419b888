//! End to end on this machine: real PostgreSQL, real S3 server (s3s-fs), real RabbitMQ and
//! Redis; wire-checking fakes for the OpenAI API, Elasticsearch and Qdrant. The whole document
//! pipeline, the formats, and the stages chained as separate jobs.

use mindora_tests::pipelines as common;

use std::time::Duration;

use futures::StreamExt;
use mindora_pipelines::Pipelines;
use mindora_tests::pipelines::e2e::STAGE_ORDER;
use mindora_tests::pipelines::{
    amqp_get, env, fixtures, job, kwargs, long_pdf, Env, Progress, REDIS_URL,
};
use serde_json::{json, Value};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_document_end_to_end() {
    let e = env(768).await;
    e.s3.put(&e.bucket, "reports/q1.pdf", long_pdf(3)).await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    p.migrate(&e.app).await.unwrap();
    p.migrate(&e.app).await.unwrap(); // idempotent

    // Subscribe to the app's Redis channel before the run.
    let redis = redis::Client::open(REDIS_URL).unwrap();
    let mut pubsub = redis.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("mindora:{}:notifications", e.app))
        .await
        .unwrap();

    let progress = Progress::default();
    let kw = kwargs(
        json!({"app": e.app, "bucket": e.bucket, "key": "reports/q1.pdf", "user_id": "u-1",
                            "options": {"metadata": {"team": "finance"}}}),
    );
    let out = p
        .call(
            "pipelines.process_document",
            &job("ai_processing_tasks"),
            &[],
            &kw,
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(out["status"], "done");
    assert_eq!(out["pages"], 3);
    assert_eq!(out["kind"], "pdf");
    let chunks = out["chunks"].as_u64().unwrap() as usize;
    assert!(chunks >= 6, "{out}");
    for stage in ["fetch", "extract", "chunk", "embed", "index", "record"] {
        assert!(
            out["timings_ms"].get(stage).is_some(),
            "no timing for {stage}: {out}"
        );
    }
    let doc_id = out["document_id"].as_str().unwrap().to_string();

    // Progress as Python would see it in job.meta.
    let stages = progress.stages();
    // Every stage but the optional analysis.
    for s in STAGE_ORDER.iter().filter(|s| **s != "analyze") {
        assert!(stages.contains(&s.to_string()), "{stages:?}");
    }
    let last = progress.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["chunks"], chunks);
    assert_eq!(last["embedded"], chunks);

    // Elasticsearch: one doc per chunk in {app}-documents-YYYY.MM, built from the template.
    {
        let es = e.es.state.lock().unwrap();
        assert!(es.templates.contains_key(&format!("{}-documents", e.app)));
        let docs = es.docs_of(&doc_id);
        assert_eq!(docs.len(), chunks);
        let month = chrono::Utc::now().format("%Y.%m").to_string();
        assert!(docs
            .iter()
            .all(|(k, _)| k.starts_with(&format!("{}-documents-{month}/", e.app))));
        assert!(docs
            .iter()
            .all(|(_, s)| s["metadata"]["team"] == "finance" && s["user_id"] == "u-1"));
    }
    // Qdrant: one 768-d point per chunk.
    {
        let q = e.qdrant.state.lock().unwrap();
        assert_eq!(
            q.collections.get(&format!("{}_documents", e.app)),
            Some(&768)
        );
        // Default MINDORA_QDRANT_DISTANCE: Cosine, as before the setting existed.
        assert_eq!(
            q.distances.get(&format!("{}_documents", e.app)),
            Some(&(qdrant_client::qdrant::Distance::Cosine as i32))
        );
        assert_eq!(
            q.points_of(&format!("{}_documents", e.app), &doc_id),
            chunks
        );
    }
    // PostgreSQL rows in the app's schema.
    let pool = common::pg().await;
    let s = e.schema();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT status, pages, chunks, kind, sha256, size_bytes, user_id, metadata FROM \"{s}\".documents WHERE id = $1::uuid")))
        .bind(&doc_id).fetch_one(&pool).await.unwrap();
    assert_eq!(row.get::<String, _>("status"), "done");
    assert_eq!(row.get::<i32, _>("pages"), 3);
    assert_eq!(row.get::<i32, _>("chunks") as usize, chunks);
    assert_eq!(row.get::<String, _>("sha256").len(), 64);
    assert_eq!(
        row.get::<Option<String>, _>("user_id").as_deref(),
        Some("u-1")
    );
    mindora_tests::pipelines::e2e::assert_full_audit_trail(&pool, &s, &doc_id)
        .await
        .unwrap();
    let runs: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{s}\".processing_runs WHERE document_id = $1::uuid AND status = 'succeeded'")))
        .bind(&doc_id).fetch_one(&pool).await.unwrap();
    assert_eq!(runs, 1);

    // Notifications: RabbitMQ queue and Redis channel.
    let msg = amqp_get(&e.queue).await.expect("notification on RabbitMQ");
    assert_eq!(msg["event"], "document.processed");
    assert_eq!(msg["document_id"], doc_id.as_str());
    assert_eq!(msg["user_id"], "u-1");
    assert_eq!(msg["chunks"], chunks);
    let redis_msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let redis_msg: Value =
        serde_json::from_str(&redis_msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(redis_msg["document_id"], doc_id.as_str());

    // Re-processing the same object replaces, never duplicates.
    p.call(
        "pipelines.process_document",
        &job("ai_processing_tasks"),
        &[],
        &kw,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(e.es.state.lock().unwrap().docs_of(&doc_id).len(), chunks);
    assert_eq!(
        e.qdrant
            .state
            .lock()
            .unwrap()
            .points_of(&format!("{}_documents", e.app), &doc_id),
        chunks
    );

    // A shorter new version under the same key: stale chunks of the old run are removed.
    e.s3.put(&e.bucket, "reports/q1.pdf", long_pdf(1)).await;
    let out2 = p
        .call(
            "pipelines.process_document",
            &job("ai_processing_tasks"),
            &[],
            &kw,
            &progress,
        )
        .await
        .unwrap();
    let chunks2 = out2["chunks"].as_u64().unwrap() as usize;
    assert!(chunks2 < chunks);
    assert_eq!(e.es.state.lock().unwrap().docs_of(&doc_id).len(), chunks2);
    assert_eq!(
        e.qdrant
            .state
            .lock()
            .unwrap()
            .points_of(&format!("{}_documents", e.app), &doc_id),
        chunks2
    );
    let runs: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{s}\".processing_runs WHERE document_id = $1::uuid"
    )))
    .bind(&doc_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(runs, 3);
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_and_1536_dimensions() {
    let e = env(1536).await;
    e.s3.put(
        &e.bucket,
        "plan.docx",
        fixtures::docx(&[
            "年度计划。第一部分讨论目标。",
            "Second paragraph in English.",
        ]),
    )
    .await;
    e.s3.put(&e.bucket, "figures.xlsx", fixtures::xlsx()).await;
    e.s3.put(
        &e.bucket,
        "page.html",
        "<html><body><h1>公告</h1><p>系统维护通知。</p></body></html>".into(),
    )
    .await;
    e.s3.put(&e.bucket, "list.csv", "a,b\n1,2\n".into()).await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    for (key, kind) in [
        ("plan.docx", "docx"),
        ("figures.xlsx", "xlsx"),
        ("page.html", "html"),
        ("list.csv", "csv"),
    ] {
        let out = e
            .run(&p, "pipelines.process_document", key, json!({}))
            .await
            .unwrap();
        assert_eq!(out["kind"], kind, "{out}");
    }
    // CJK text reaches the index intact.
    let es = e.es.state.lock().unwrap();
    let all: Vec<String> = es
        .indices
        .values()
        .flat_map(|d| d.values())
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    assert!(all
        .iter()
        .any(|t| t.contains("年度计划。第一部分讨论目标。")));
    // A sheet is a Markdown table (its first row the header).
    assert!(all.iter().any(|t| t.contains("| 城市 | 人口 |")), "{all:?}");
    assert!(all.iter().any(|t| t.contains("系统维护通知。")));
    drop(es);
    assert_eq!(
        e.qdrant
            .state
            .lock()
            .unwrap()
            .collections
            .get(&format!("{}_documents", e.app)),
        Some(&1536)
    );
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_stage_jobs() {
    let mut e = env(768).await;
    e.config.chat_model = Some("fake-chat".into());
    e.s3.put(
        &e.bucket,
        "memo.md",
        "# Memo\n\nBudget approved for the new office. 预算已批准。\n\nMove in March.".into(),
    )
    .await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    // Out of order: a clear message naming the stage to run first.
    assert_needs(&e, &p, "pipelines.chunk", "pipelines.extract").await;
    let r = e
        .run(&p, "pipelines.extract", "memo.md", json!({}))
        .await
        .unwrap();
    assert_eq!(r["kind"], "markdown");
    assert_needs(&e, &p, "pipelines.index", "pipelines.chunk").await;
    let r = e
        .run(&p, "pipelines.chunk", "memo.md", json!({}))
        .await
        .unwrap();
    let n = r["chunks"].as_u64().unwrap() as usize;
    assert_needs(&e, &p, "pipelines.index", "pipelines.embed").await;
    let r = e
        .run(&p, "pipelines.embed", "memo.md", json!({}))
        .await
        .unwrap();
    assert_eq!(r["dimensions"], 768);
    let r = e
        .run(&p, "pipelines.index", "memo.md", json!({}))
        .await
        .unwrap();
    let doc_id = r["document_id"].as_str().unwrap().to_string();
    assert_eq!(e.es.state.lock().unwrap().docs_of(&doc_id).len(), n);
    assert_eq!(
        e.qdrant
            .state
            .lock()
            .unwrap()
            .points_of(&format!("{}_documents", e.app), &doc_id),
        n
    );
    let r = e
        .run(&p, "pipelines.analyze", "memo.md", json!({}))
        .await
        .unwrap();
    assert!(r["analysis"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("A document about"));
    e.run(&p, "pipelines.record", "memo.md", json!({}))
        .await
        .unwrap();
    let r = e
        .run(&p, "pipelines.notify", "memo.md", json!({}))
        .await
        .unwrap();
    assert_eq!(r["notified"]["amqp_queue"], e.queue.as_str());
    let msg = amqp_get(&e.queue).await.unwrap();
    assert_eq!(msg["status"], "done");
    assert_eq!(msg["event"], "document.processed");

    let pool = common::pg().await;
    let s = e.schema();
    let (status, summary): (String, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT status, summary FROM \"{s}\".documents WHERE id = $1::uuid"
    )))
    .bind(&doc_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "done");
    assert!(summary.unwrap().starts_with("A document about"));
    let audit: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_status FROM \"{s}\".audit_log WHERE document_id = $1::uuid ORDER BY id"
    )))
    .bind(&doc_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    // The out-of-order calls above failed their jobs, and the audit log says so.
    assert_eq!(
        audit,
        [
            "failed",
            "fetched",
            "extracted",
            "failed",
            "chunked",
            "failed",
            "embedded",
            "indexed",
            "analyzed",
            "done"
        ]
    );
    let functions: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT function FROM \"{s}\".processing_runs WHERE document_id = $1::uuid AND status = 'succeeded' ORDER BY started_at")))
        .bind(&doc_id).fetch_all(&pool).await.unwrap();
    assert_eq!(functions.len(), 7, "{functions:?}");
    e.assert_no_violations();
}

/// Running `function` before the stage it needs fails with a clear message naming that stage.
async fn assert_needs(e: &Env, p: &Pipelines, function: &str, needs: &str) {
    let err = e.run(p, function, "memo.md", json!({})).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("run {needs} first")),
        "{err}"
    );
}
