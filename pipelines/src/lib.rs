//! Document pipelines for `mindora-worker`: a document uploaded to S3 becomes searchable by
//! words (Elasticsearch) and by meaning (Qdrant), is recorded in PostgreSQL, optionally
//! summarized, and its user is told — all from one rq job, `pipelines.process_document`, or
//! from a chain of per-stage jobs.
//!
//! Each stage is a module behind a small trait ([`fetch::ObjectSource`], [`extract::Extractor`],
//! [`chunk::Chunker`], [`openai::Embedder`], [`index_fulltext::FulltextIndex`],
//! [`index_vectors::VectorIndex`], [`record::RecordStore`], [`openai::Analyzer`],
//! [`notify::Notifier`]) so it can be tested alone or swapped; [`Stages`] holds one of each.

#![warn(missing_docs)]

pub mod app_options;
pub mod chunk;
pub mod config;
pub mod document;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod function;
pub mod index_fulltext;
pub mod index_vectors;
pub mod markdown;
pub mod model;
pub mod notify;
pub mod openai;
mod pipeline;
pub mod record;
mod telemetry;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use app_options::AppOptions;
pub use config::PipelineConfig;
pub use error::{ExtractProblem, PipelineError};
pub use function::Function;

/// Identity of the job being run, recorded with each processing run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobInfo {
    /// rq job id (or AMQP message id).
    pub id: String,
    /// Queue the job came from.
    pub queue: String,
    /// `"redis"` or `"amqp"`.
    pub source: String,
}

/// Non-blocking progress reports; the worker stores them in the rq job's `meta` so Python can
/// watch a long document with `job.refresh(); job.meta`.
pub trait ProgressSink: Send + Sync {
    /// Reports the current stage and counts. Must not block.
    fn report(&self, meta: Map<String, Value>);
}

/// A [`ProgressSink`] that drops reports, for callers without a job to update.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _meta: Map<String, Value>) {}
}

/// One implementation per stage. `None` means "not configured": the stage is skipped inside
/// `process_document` (full-text, vectors, analyze, notify) or fails with a message naming the
/// variable to set (fetch, record, embed when vectors are on).
#[derive(Clone)]
pub struct Stages {
    /// Object store.
    pub source: Option<Arc<dyn fetch::ObjectSource>>,
    /// Text extraction.
    pub extractor: Arc<dyn extract::Extractor>,
    /// Chunking.
    pub chunker: Arc<dyn chunk::Chunker>,
    /// Embeddings.
    pub embedder: Option<Arc<dyn openai::Embedder>>,
    /// Summary and keywords.
    pub analyzer: Option<Arc<dyn openai::Analyzer>>,
    /// Full-text index.
    pub fulltext: Option<Arc<dyn index_fulltext::FulltextIndex>>,
    /// Vector index.
    pub vectors: Option<Arc<dyn index_vectors::VectorIndex>>,
    /// PostgreSQL records.
    pub records: Option<Arc<dyn record::RecordStore>>,
    /// Notifications.
    pub notifier: Option<Arc<dyn notify::Notifier>>,
}

impl Stages {
    /// The production stages for `config`; services without configuration are `None`.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let notifier = notify::BrokerNotifier::from_config(config)?;
        Ok(Stages {
            source: if config.s3_access_key.is_some() && config.s3_secret_key.is_some() {
                Some(Arc::new(fetch::S3Source::from_config(config)?))
            } else {
                None
            },
            extractor: Arc::new(extract::DefaultExtractor),
            chunker: Arc::new(chunk::TextChunker::new(
                config.chunk_size,
                config.chunk_overlap,
            )),
            embedder: match &config.embed_base_url {
                Some(_) => Some(Arc::new(openai::OpenAiEmbedder::from_config(config)?)),
                None => None,
            },
            analyzer: match openai::OpenAiAnalyzer::from_config(config)? {
                Some(a) => Some(Arc::new(a)),
                None => None,
            },
            fulltext: match &config.elasticsearch_url {
                Some(_) => Some(Arc::new(index_fulltext::ElasticIndex::from_config(config)?)),
                None => None,
            },
            vectors: match &config.qdrant_url {
                Some(_) => Some(Arc::new(index_vectors::QdrantIndex::from_config(config)?)),
                None => None,
            },
            records: match &config.database_url {
                Some(_) => Some(Arc::new(record::PgRecordStore::from_config(config)?)),
                None => None,
            },
            notifier: if notifier.is_configured() {
                Some(Arc::new(notifier))
            } else {
                None
            },
        })
    }
}

/// The pipelines of one worker process. Cheap to clone; all clones share clients and caps.
#[derive(Clone)]
pub struct Pipelines {
    inner: Arc<pipeline::Inner>,
}

impl Pipelines {
    /// Builds clients lazily: no service is contacted here, so a service that is down fails the
    /// jobs that need it (retryably), not the worker's start-up. Invalid configuration (a URL
    /// that does not parse) is an error.
    pub async fn new(config: PipelineConfig) -> Result<Self, PipelineError> {
        let stages = Stages::from_config(&config)?;
        Ok(Self::with_stages(config, stages))
    }

    /// Pipelines over caller-provided stages (tests, custom stores or models).
    pub fn with_stages(config: PipelineConfig, stages: Stages) -> Self {
        Pipelines {
            inner: Arc::new(pipeline::Inner {
                config,
                stages,
                app_options: Default::default(),
            }),
        }
    }

    /// The rq function names served, in pipeline order.
    pub fn function_names() -> impl Iterator<Item = &'static str> {
        Function::ALL.into_iter().map(Function::name)
    }

    /// Runs the function named `function` (`pipelines.<stage>`; an unknown name is
    /// [`PipelineError::UnknownFunction`]) with the rq job's args/kwargs.
    pub async fn call(
        &self,
        function: &str,
        job: &JobInfo,
        args: &[Value],
        kwargs: &Map<String, Value>,
        progress: &dyn ProgressSink,
    ) -> Result<Value, PipelineError> {
        let function = Function::parse(function)?;
        self.call_function(function, job, args, kwargs, progress)
            .await
    }

    /// Runs one function with the rq job's args/kwargs and returns the job's result.
    pub async fn call_function(
        &self,
        function: Function,
        job: &JobInfo,
        args: &[Value],
        kwargs: &Map<String, Value>,
        progress: &dyn ProgressSink,
    ) -> Result<Value, PipelineError> {
        self.inner.call(function, job, args, kwargs, progress).await
    }

    /// Applies the migrations to the app's schema (`mindora-worker migrate --app NAME`, and at
    /// start-up for each of `MINDORA_APPS`).
    pub async fn migrate(&self, app: &str) -> Result<(), PipelineError> {
        let app = model::App::parse(app)?;
        let Some(records) = &self.inner.stages.records else {
            return Err(PipelineError::NotConfigured {
                what: "PostgreSQL",
                var: "MINDORA_DATABASE_URL",
            });
        };
        records.migrate(&app).await
    }

    /// Replaces `app`'s defaults (chunking, which stages run) for the jobs that start from now
    /// on; the job's own `options` still win. All clones see the change.
    pub fn set_app_options(&self, app: &str, options: AppOptions) {
        self.inner.app_options.set(app, options);
    }

    /// `app`'s current defaults.
    pub fn app_options(&self, app: &str) -> AppOptions {
        self.inner
            .app_options
            .get(app)
            .map(|o| (*o).clone())
            .unwrap_or_default()
    }

    /// The configuration in use.
    pub fn config(&self) -> &PipelineConfig {
        &self.inner.config
    }
}
