//! The pipelines API's guarantees (`Send` futures, shareable `Pipelines`) and the test kit's
//! cleanup guard.

use mindora_tests::pipelines as common;

use mindora_pipelines::{PipelineConfig, Pipelines};
use mindora_tests::pipelines::{job, AMQP_URL, PG_URL};

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
