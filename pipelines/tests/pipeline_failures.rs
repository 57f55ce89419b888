//! Failures of the document pipeline against real PostgreSQL, S3 (s3s-fs), RabbitMQ and Redis
//! and the wire-checking fakes: failed documents recorded and notified, embedding retries and
//! dimension mismatches, partial Elasticsearch bulk failures, services down.

use mindora_tests::pipelines as common;

use mindora_pipelines::{PipelineConfig, PipelineError, Pipelines};
use mindora_tests::pipelines::{amqp_get, env, fixtures, job, kwargs, long_pdf};
use serde_json::json;
use sqlx::Row;

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
