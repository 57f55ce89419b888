//! End to end on this machine: real PostgreSQL, real S3 server (s3s-fs), real RabbitMQ and
//! Redis; wire-checking fakes for the OpenAI API, Elasticsearch and Qdrant.

use mindora_tests::pipelines as common;

use std::time::Duration;

use futures::StreamExt;
use mindora_pipelines::{PipelineConfig, PipelineError, Pipelines};
use mindora_tests::pipelines::{
    fakes, fixtures, job, kwargs, Progress, S3Server, AMQP_URL, PG_URL, REDIS_URL,
};
use serde_json::{json, Value};
use sqlx::Row;

struct Env {
    s3: S3Server,
    openai: fakes::FakeOpenAi,
    es: fakes::FakeElastic,
    qdrant: fakes::FakeQdrant,
    app: String,
    bucket: String,
    queue: String,
    config: PipelineConfig,
    /// Drops the app's schema and deletes the notification queue, also when the test panics.
    _cleanup: common::Cleanup,
}

async fn env(dims: u32) -> Env {
    let app = common::unique("t");
    let queue = common::unique("user_notifications_test_");
    let cleanup = common::cleanup(&app, &queue);
    let s3 = S3Server::start().await;
    let openai = fakes::openai().await;
    let es = fakes::elastic().await;
    let qdrant = fakes::qdrant().await;
    let mut config = PipelineConfig::default();
    s3.configure(&mut config);
    config.database_url = Some(PG_URL.into());
    config.embed_base_url = Some(openai.url.clone());
    config.embed_api_key = Some("sk-test".into());
    config.embed_model = format!("fake-embed-{dims}");
    config.embed_dimensions = dims;
    config.embed_batch_size = 8;
    config.embed_concurrency = 2;
    config.elasticsearch_url = Some(es.url.clone());
    config.qdrant_url = Some(qdrant.url.clone());
    config.amqp_url = Some(AMQP_URL.into());
    config.notify_queue = queue.clone();
    config.notify_redis_url = Some(REDIS_URL.into());
    config.chunk_size = 400;
    config.chunk_overlap = 80;
    Env {
        s3,
        openai,
        es,
        qdrant,
        bucket: format!("b-{app}"),
        app,
        queue,
        config,
        _cleanup: cleanup,
    }
}

impl Env {
    fn assert_no_violations(&self) {
        assert!(
            self.openai.state.lock().unwrap().violations.is_empty(),
            "{:?}",
            self.openai.state.lock().unwrap().violations
        );
        assert!(
            self.es.state.lock().unwrap().violations.is_empty(),
            "{:?}",
            self.es.state.lock().unwrap().violations
        );
        assert!(
            self.qdrant.state.lock().unwrap().violations.is_empty(),
            "{:?}",
            self.qdrant.state.lock().unwrap().violations
        );
    }

    async fn run(
        &self,
        p: &Pipelines,
        function: &str,
        key: &str,
        extra: Value,
    ) -> Result<Value, PipelineError> {
        let mut kw = kwargs(json!({"app": self.app, "bucket": self.bucket, "key": key}));
        if let Value::Object(m) = extra {
            kw.extend(m);
        }
        p.call(
            function,
            &job("ai_processing_tasks"),
            &[],
            &kw,
            &mindora_pipelines::NoProgress,
        )
        .await
    }

    fn schema(&self) -> String {
        format!("mindora_{}", self.app)
    }
}

async fn amqp_get(queue: &str) -> Option<Value> {
    use lapin::options::BasicGetOptions;
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for _ in 0..50 {
        if let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return serde_json::from_slice(&msg.delivery.data).ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn long_pdf(pages: usize) -> Vec<u8> {
    fixtures::pdf(
        &(1..=pages)
            .map(|p| fixtures::prose_page(p, 12))
            .collect::<Vec<_>>(),
    )
}

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
    for s in [
        "fetch",
        "extract",
        "chunk",
        "embed",
        "index_fulltext",
        "index_vectors",
        "record",
        "notify",
        "done",
    ] {
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
    let audit: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_status FROM \"{s}\".audit_log WHERE document_id = $1::uuid ORDER BY id"
    )))
    .bind(&doc_id)
    .fetch_all(&pool)
    .await
    .unwrap();
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
    assert!(all.iter().any(|t| t.contains("城市\t人口")));
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
async fn failures_are_recorded_and_notified() {
    let e = env(768).await;
    let mut corrupt = long_pdf(1);
    corrupt.truncate(corrupt.len() / 3);
    e.s3.put(&e.bucket, "broken.pdf", corrupt).await;
    e.s3.put(&e.bucket, "secret.pdf", fixtures::kept("encrypted.pdf"))
        .await;
    e.s3.put(&e.bucket, "empty.txt", Vec::new()).await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();

    let err = e
        .run(&p, "pipelines.process_document", "broken.pdf", json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("broken.pdf: the PDF is corrupt"),
        "{err}"
    );
    assert!(!err.is_retryable());
    let msg = amqp_get(&e.queue).await.expect("failure notification");
    assert_eq!(msg["event"], "document.failed");
    assert_eq!(msg["error_kind"], "corrupt_document");

    let err = e
        .run(&p, "pipelines.process_document", "secret.pdf", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret.pdf: the PDF is encrypted; a password is needed: pass it as options.password, or upload an unencrypted copy"
    );
    // The job's options.password reaches the PDF engine.
    let err = e
        .run(
            &p,
            "pipelines.process_document",
            "secret.pdf",
            json!({"options": {"password": "guess"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret.pdf: the PDF is encrypted and the password in options.password does not open it"
    );
    assert_eq!(err.kind(), "encrypted_document");
    let err = e
        .run(&p, "pipelines.process_document", "empty.txt", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "empty.txt: the file is empty (no text could be found)"
    );

    let err = e
        .run(&p, "pipelines.process_document", "missing.pdf", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::ObjectNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.pdf: object not found"));
    assert!(!err.is_retryable());

    // Size limit.
    let mut small = e.config.clone();
    small.max_object_bytes = 100;
    e.s3.put(&e.bucket, "big.txt", vec![b'a'; 1000]).await;
    let p2 = Pipelines::new(small).await.unwrap();
    let err = e
        .run(&p2, "pipelines.process_document", "big.txt", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::ObjectTooLarge {
                size: 1000,
                limit: 100,
                ..
            }
        ),
        "{err:?}"
    );

    // The failures are in PostgreSQL with status failed and the reason.
    let pool = common::pg().await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT key, status, error, error_kind FROM \"{}\".documents ORDER BY key",
        e.schema()
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get("key"),
                r.get("status"),
                r.get::<String, _>("error_kind"),
            )
        })
        .collect();
    assert!(
        got.contains(&(
            "broken.pdf".into(),
            "failed".into(),
            "corrupt_document".into()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "secret.pdf".into(),
            "failed".into(),
            "encrypted_document".into()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&("empty.txt".into(), "failed".into(), "empty_document".into())),
        "{got:?}"
    );
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_retries_and_dimension_mismatch() {
    let e = env(768).await;
    e.s3.put(
        &e.bucket,
        "a.txt",
        "Some text to embed. ".repeat(50).into_bytes(),
    )
    .await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    e.openai
        .state
        .lock()
        .unwrap()
        .fail_with
        .extend([429, 500, 429]);
    let out = e
        .run(&p, "pipelines.process_document", "a.txt", json!({}))
        .await
        .unwrap();
    assert_eq!(out["status"], "done");
    assert!(e.openai.state.lock().unwrap().fail_with.is_empty());
    assert!(e.openai.state.lock().unwrap().max_batch <= 8);

    // Persistent 500s: a retryable error naming the service.
    let mut cfg = e.config.clone();
    cfg.embed_retries = 1;
    let p_fail = Pipelines::new(cfg).await.unwrap();
    e.openai.state.lock().unwrap().always_fail = true;
    let err = e
        .run(&p_fail, "pipelines.process_document", "a.txt", json!({}))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("OpenAI-compatible API"), "{err}");
    e.openai.state.lock().unwrap().always_fail = false;

    // The model answers 1536-d vectors while 768 is configured.
    e.openai.state.lock().unwrap().force_dims = Some(1536);
    let err = e
        .run(&p, "pipelines.process_document", "a.txt", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("1536-dimensional"), "{err}");
    e.openai.state.lock().unwrap().force_dims = None;

    // The collection holds 768-d vectors but the app now uses a 1536-d model.
    let mut cfg = e.config.clone();
    cfg.embed_model = "fake-embed-1536".into();
    cfg.embed_dimensions = 1536;
    let p1536 = Pipelines::new(cfg).await.unwrap();
    let err = p1536
        .call(
            "pipelines.process_document",
            &job("q"),
            &[],
            &kwargs(json!({"app": e.app, "bucket": e.bucket, "key": "a.txt"})),
            &mindora_pipelines::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("holds 768-dimensional vectors"),
        "{err}"
    );
    assert!(!err.is_retryable());
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_partial_bulk_failures() {
    let e = env(768).await;
    e.s3.put(
        &e.bucket,
        "busy.txt",
        "Paragraph ES_BUSY one.\n\nParagraph two.".into(),
    )
    .await;
    e.s3.put(
        &e.bucket,
        "bad.txt",
        "Fine paragraph.\n\nThis one ES_REJECT fails.".into(),
    )
    .await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    // 429 on one item: only that item is re-sent, the job succeeds.
    let out = e
        .run(&p, "pipelines.process_document", "busy.txt", json!({}))
        .await
        .unwrap();
    assert_eq!(
        e.es.state
            .lock()
            .unwrap()
            .docs_of(out["document_id"].as_str().unwrap())
            .len(),
        out["chunks"].as_u64().unwrap() as usize
    );
    // 400 on an item: permanent failure naming the file and the reason.
    let err = e
        .run(
            &p,
            "pipelines.process_document",
            "bad.txt",
            json!({"options": {"index_vectors": false}}),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    let s = err.to_string();
    assert!(
        s.contains("bad.txt") && s.contains("document_parsing_exception"),
        "{s}"
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
    let err = e
        .run(&p, "pipelines.chunk", "memo.md", json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run pipelines.extract first"),
        "{err}"
    );
    let r = e
        .run(&p, "pipelines.extract", "memo.md", json!({}))
        .await
        .unwrap();
    assert_eq!(r["kind"], "markdown");
    let err = e
        .run(&p, "pipelines.index", "memo.md", json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run pipelines.chunk first"),
        "{err}"
    );
    let r = e
        .run(&p, "pipelines.chunk", "memo.md", json!({}))
        .await
        .unwrap();
    let n = r["chunks"].as_u64().unwrap() as usize;
    let err = e
        .run(&p, "pipelines.index", "memo.md", json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run pipelines.embed first"),
        "{err}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_down_fail_jobs_not_startup() {
    let dead = "http://127.0.0.1:9"; // discard port: connection refused
    let config = PipelineConfig {
        database_url: Some("postgres://postgres@127.0.0.1:9/test".into()),
        s3_endpoint: Some(dead.into()),
        s3_access_key: Some("k".into()),
        s3_secret_key: Some("s".into()),
        elasticsearch_url: Some(dead.into()),
        qdrant_url: Some(dead.into()),
        embed_base_url: Some(format!("{dead}/v1")),
        amqp_url: Some("amqp://guest:guest@127.0.0.1:9/%2f".into()),
        ..Default::default()
    };
    let p = Pipelines::new(config)
        .await
        .expect("start-up must not contact services");
    let err = p
        .call(
            "pipelines.process_document",
            &job("q"),
            &[json!("acme"), json!("b"), json!("a.pdf")],
            &Default::default(),
            &mindora_pipelines::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().starts_with("S3: s3://b/a.pdf"), "{err}");

    // Unconfigured pipelines: the worker starts; jobs fail with the variable to set.
    let p = Pipelines::new(PipelineConfig::default()).await.unwrap();
    let err = p
        .call(
            "pipelines.process_document",
            &job("q"),
            &[],
            &kwargs(json!({"app": "acme", "bucket": "b", "key": "k"})),
            &mindora_pipelines::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MINDORA_S3"), "{err}");
    let err = p.migrate("acme").await.unwrap_err();
    assert!(err.to_string().contains("MINDORA_DATABASE_URL"));
    // Bad arguments are permanent.
    let err = p
        .call(
            "pipelines.process_document",
            &job("q"),
            &[],
            &kwargs(json!({"app": "Bad App!", "bucket": "b", "key": "k"})),
            &mindora_pipelines::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::InvalidArgument(_)));
    let err = p
        .call(
            "pipelines.nope",
            &job("q"),
            &[],
            &Default::default(),
            &mindora_pipelines::NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::UnknownFunction(_)));
}

/// The worker spawns `call` on a multi-threaded runtime: its future must be `Send`, and
/// `Pipelines` shareable across tasks.
#[test]
fn call_future_is_send_and_pipelines_is_shareable() {
    fn send<T: Send>(_: &T) {}
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Pipelines>();
    let p = Pipelines::with_stages(
        PipelineConfig::default(),
        mindora_pipelines::Stages::from_config(&PipelineConfig::default()).unwrap(),
    );
    let kw = serde_json::Map::new();
    let j = job("q");
    let fut = p.call(
        "pipelines.fetch",
        &j,
        &[],
        &kw,
        &mindora_pipelines::NoProgress,
    );
    send(&fut);
    assert_eq!(
        Pipelines::function_names().next(),
        Some("pipelines.process_document")
    );
}

/// The cleanup guard removes the app's schema and the queue when the test holding it panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_guard_runs_when_a_test_panics() {
    let app = common::unique("t");
    let queue = common::unique("user_notifications_test_");
    let schema = format!("mindora_{app}");
    let guard = common::cleanup(&app, &queue);

    let config = PipelineConfig {
        database_url: Some(PG_URL.into()),
        ..Default::default()
    };
    Pipelines::new(config)
        .await
        .unwrap()
        .migrate(&app)
        .await
        .unwrap();
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();

    let pool = common::pg().await;
    let schema_exists = |pool: sqlx::PgPool, schema: String| async move {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(schema)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(schema_exists(pool.clone(), schema.clone()).await);

    // A panicking "test" holding the guard.
    let panicked = std::thread::spawn(move || {
        let _cleanup = guard;
        panic!("deliberate panic: the guard must still clean up");
    })
    .join();
    assert!(panicked.is_err());

    assert!(!schema_exists(pool, schema).await, "schema left behind");
    let passive = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    assert!(passive.is_err(), "queue {queue} left behind");
    let _ = conn.close(200, "bye".into()).await;
}
