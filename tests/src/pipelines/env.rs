//! One test's own stand-ins and names for the pipelines (S3 server, OpenAI/Elasticsearch/Qdrant
//! fakes, app, bucket, notification queue, cleanup guard), shared by the in-process pipeline
//! tests and the end-to-end tests through the worker binary.

use std::ops::Deref;
use std::time::Duration;

use mindora_pipelines::{PipelineConfig, PipelineError, Pipelines};
use serde_json::{json, Value};

use super::{
    cleanup, fakes, fixtures, job, kwargs, unique, Cleanup, S3Server, AMQP_URL, PG_URL, REDIS_URL,
};

/// Everything one test needs, unique to it: app (PostgreSQL schema, ES indices, Qdrant
/// collection), bucket, notification queue and its own S3 server and fakes.
pub struct Services {
    pub s3: S3Server,
    pub openai: fakes::FakeOpenAi,
    pub es: fakes::FakeElastic,
    pub qdrant: fakes::FakeQdrant,
    pub app: String,
    pub bucket: String,
    pub queue: String,
    /// Drops the app's schema and deletes the notification queue, also when the test panics.
    _cleanup: Cleanup,
}

impl Services {
    /// Starts the stand-ins for an app named `<app_prefix><random>` and a notification queue
    /// named `<queue_prefix><random>`.
    pub async fn start(app_prefix: &str, queue_prefix: &str) -> Services {
        let app = unique(app_prefix);
        let queue = unique(queue_prefix);
        let cleanup = cleanup(&app, &queue);
        Services {
            s3: S3Server::start().await,
            openai: fakes::openai().await,
            es: fakes::elastic().await,
            qdrant: fakes::qdrant().await,
            bucket: format!("b-{app}"),
            app,
            queue,
            _cleanup: cleanup,
        }
    }

    /// The PostgreSQL schema of the app.
    pub fn schema(&self) -> String {
        format!("mindora_{}", self.app)
    }

    /// Fails the test if a fake received a request the real service would reject.
    pub fn assert_no_violations(&self) {
        let o = self.openai.state.lock().unwrap();
        assert!(o.violations.is_empty(), "OpenAI: {:?}", o.violations);
        let e = self.es.state.lock().unwrap();
        assert!(e.violations.is_empty(), "Elasticsearch: {:?}", e.violations);
        let q = self.qdrant.state.lock().unwrap();
        assert!(q.violations.is_empty(), "Qdrant: {:?}", q.violations);
    }
}

/// [`Services`] plus the in-process pipelines configuration pointing at them.
pub struct Env {
    pub services: Services,
    pub config: PipelineConfig,
}

impl Deref for Env {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The stand-ins and a configuration with embeddings of `dims` dimensions.
pub async fn env(dims: u32) -> Env {
    let services = Services::start("t", "user_notifications_test_").await;
    let mut config = PipelineConfig::default();
    services.s3.configure(&mut config);
    config.database_url = Some(PG_URL.into());
    config.embed_base_url = Some(services.openai.url.clone());
    config.embed_api_key = Some("sk-test".into());
    config.embed_model = format!("fake-embed-{dims}");
    config.embed_dimensions = dims;
    config.embed_batch_size = 8;
    config.embed_concurrency = 2;
    config.elasticsearch_url = Some(services.es.url.clone());
    config.qdrant_url = Some(services.qdrant.url.clone());
    config.amqp_url = Some(AMQP_URL.into());
    config.notify_queue = services.queue.clone();
    config.notify_redis_url = Some(REDIS_URL.into());
    config.chunk_size = 400;
    config.chunk_overlap = 80;
    Env { services, config }
}

impl Env {
    /// Calls `function` on the object `key` of the test's bucket, `extra` added to the kwargs.
    pub async fn run(
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
}

/// The next message on a RabbitMQ queue (auto-acknowledged), waiting up to 2.5 s.
pub async fn amqp_get(queue: &str) -> Option<Value> {
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

/// A PDF of `pages` pages of prose.
pub fn long_pdf(pages: usize) -> Vec<u8> {
    fixtures::pdf(
        &(1..=pages)
            .map(|p| fixtures::prose_page(p, 12))
            .collect::<Vec<_>>(),
    )
}
