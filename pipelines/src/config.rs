//! Configuration of the pipelines, shaped for `#[command(flatten)]` in the worker's CLI.
//!
//! Every service is optional: the worker must start even when pipelines are not configured, and
//! a job that needs a missing service fails with a message naming the variable to set.

use clap::{Args, ValueEnum};

/// Vector distance of a Qdrant collection, spelt as Qdrant spells it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QdrantDistance {
    /// Cosine similarity (normalized vectors; what OpenAI-style embeddings expect).
    #[default]
    #[value(name = "Cosine")]
    Cosine,
    /// Dot product.
    #[value(name = "Dot")]
    Dot,
    /// Euclidean distance.
    #[value(name = "Euclid")]
    Euclid,
    /// Manhattan distance.
    #[value(name = "Manhattan")]
    Manhattan,
}

/// All pipeline settings. Each field is a `--flag` and an `MINDORA_*` environment variable.
#[derive(Args, Debug, Clone)]
pub struct PipelineConfig {
    /// PostgreSQL URL for the record stage and stage intermediates (one schema per app).
    #[arg(long, env = "MINDORA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Maximum PostgreSQL connections held by this worker process.
    #[arg(long, env = "MINDORA_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// S3/MinIO endpoint URL; unset means AWS's own endpoint for the region.
    #[arg(long, env = "MINDORA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (MinIO accepts any).
    #[arg(long, env = "MINDORA_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id.
    #[arg(long, env = "MINDORA_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "MINDORA_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO and most self-hosted S3.
    #[arg(long, env = "MINDORA_S3_FORCE_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_force_path_style: bool,
    /// Largest object a job will download (default 100 MiB: the stack's upload limit). Objects
    /// are streamed to a temporary file, so this bounds disk, not memory; see `.env.example`.
    #[arg(long, env = "MINDORA_MAX_OBJECT_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_object_bytes: u64,
    /// Largest non-PDF object (DOCX/XLSX/ODS ZIP containers, HTML, text) a job will parse: those
    /// formats are parsed whole in memory, PDFs page by page, so this caps what memory a
    /// document's size can still decide.
    #[arg(long, env = "MINDORA_MAX_PARSED_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_parsed_bytes: u64,
    /// Directory of the temporary files objects are downloaded to (default: `TMPDIR`, else
    /// `/tmp`); it needs room for `concurrency × MINDORA_MAX_OBJECT_BYTES`.
    #[arg(long, env = "MINDORA_TMP_DIR")]
    pub tmp_dir: Option<std::path::PathBuf>,

    /// Base URL of an OpenAI-compatible API (OpenAI, Ollama, vLLM), including `/v1`.
    #[arg(long, env = "MINDORA_EMBED_BASE_URL")]
    pub embed_base_url: Option<String>,
    /// API key for the OpenAI-compatible API (Ollama/vLLM accept any).
    #[arg(long, env = "MINDORA_EMBED_API_KEY", hide_env_values = true)]
    pub embed_api_key: Option<String>,
    /// Embedding model name.
    #[arg(
        long,
        env = "MINDORA_EMBED_MODEL",
        default_value = "text-embedding-3-small"
    )]
    pub embed_model: String,
    /// Vector size the model returns (768 and 1536 are both common); also the Qdrant vector size.
    #[arg(long, env = "MINDORA_EMBED_DIMENSIONS", default_value_t = 1536)]
    pub embed_dimensions: u32,
    /// Send `dimensions` in embedding requests (OpenAI text-embedding-3 honours it; some servers reject it).
    #[arg(long, env = "MINDORA_EMBED_SEND_DIMENSIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub embed_send_dimensions: bool,
    /// Texts per embeddings request.
    #[arg(long, env = "MINDORA_EMBED_BATCH_SIZE", default_value_t = 64)]
    pub embed_batch_size: usize,
    /// Embedding requests in flight at once in this process, across all jobs.
    #[arg(long, env = "MINDORA_EMBED_CONCURRENCY", default_value_t = 4)]
    pub embed_concurrency: usize,
    /// Extra attempts of a failed embeddings batch after the client's own 429/5xx retries.
    #[arg(long, env = "MINDORA_EMBED_RETRIES", default_value_t = 3)]
    pub embed_retries: u32,
    /// Chat model for the analyze stage (summary and keywords); the stage runs only when set.
    #[arg(long, env = "MINDORA_CHAT_MODEL")]
    pub chat_model: Option<String>,

    /// Elasticsearch URL; the full-text index stage is skipped when unset.
    #[arg(long, env = "MINDORA_ELASTICSEARCH_URL")]
    pub elasticsearch_url: Option<String>,
    /// Elasticsearch basic-auth user.
    #[arg(long, env = "MINDORA_ELASTICSEARCH_USERNAME")]
    pub elasticsearch_username: Option<String>,
    /// Elasticsearch basic-auth password.
    #[arg(long, env = "MINDORA_ELASTICSEARCH_PASSWORD", hide_env_values = true)]
    pub elasticsearch_password: Option<String>,

    /// Qdrant gRPC URL (port 6334); the vector index stage is skipped when unset.
    #[arg(long, env = "MINDORA_QDRANT_URL")]
    pub qdrant_url: Option<String>,
    /// Qdrant API key.
    #[arg(long, env = "MINDORA_QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Distance of the app collections the worker creates (Cosine, Dot, Euclid, Manhattan);
    /// match the embedding model's training objective. An existing collection keeps its own.
    #[arg(
        long,
        env = "MINDORA_QDRANT_DISTANCE",
        value_enum,
        ignore_case = true,
        default_value_t = QdrantDistance::Cosine
    )]
    pub qdrant_distance: QdrantDistance,

    /// RabbitMQ URL for notifications.
    #[arg(long = "notify-amqp-url", env = "MINDORA_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// RabbitMQ queue that receives user notifications.
    #[arg(
        long,
        env = "MINDORA_NOTIFY_QUEUE",
        default_value = "user_notifications"
    )]
    pub notify_queue: String,
    /// Redis URL for per-app pub/sub notifications (channel `mindora:{app}:notifications`).
    #[arg(long, env = "MINDORA_NOTIFY_REDIS_URL")]
    pub notify_redis_url: Option<String>,

    /// Target chunk size in characters.
    #[arg(long, env = "MINDORA_CHUNK_SIZE", default_value_t = 1200)]
    pub chunk_size: usize,
    /// Characters of overlap between consecutive chunks.
    #[arg(long, env = "MINDORA_CHUNK_OVERLAP", default_value_t = 200)]
    pub chunk_overlap: usize,
    /// Wall-time limit for extracting one document, in seconds (checked between PDF pages).
    #[arg(long, env = "MINDORA_EXTRACT_TIMEOUT_SECS", default_value_t = 300)]
    pub extract_timeout_secs: u64,

    /// OCR for PDF pages that are images only (scans): the Tesseract languages, `+`-separated
    /// (`chi_sim+eng`; installed packs: `tesseract --list-langs`). Unset or empty: off, and such
    /// pages are reported as "no text layer". A job's `options.ocr` overrides it either way.
    #[arg(long, env = "MINDORA_OCR")]
    pub ocr: Option<String>,
    /// Resolution pages are rendered at for OCR (capped at about 36 megapixels per page).
    #[arg(long, env = "MINDORA_OCR_DPI", default_value_t = 300)]
    pub ocr_dpi: u32,
    /// Wall-time limit for OCR of one page, in seconds; tesseract is killed past it and the job
    /// fails saying so. The document's MINDORA_EXTRACT_TIMEOUT_SECS applies as well.
    #[arg(long, env = "MINDORA_OCR_PAGE_TIMEOUT_SECS", default_value_t = 120)]
    pub ocr_page_timeout_secs: u64,
    /// Tesseract processes running at once in this worker process (0: one per CPU). Each job
    /// runs at most one.
    #[arg(long, env = "MINDORA_OCR_CONCURRENCY", default_value_t = 0)]
    pub ocr_concurrency: usize,
    /// Address-space limit of one tesseract process in MiB (0: none; applied with prlimit).
    #[arg(long, env = "MINDORA_OCR_MEMORY_MB", default_value_t = 2048)]
    pub ocr_memory_mb: u64,
    /// The tesseract program: a name looked up in PATH, or a path.
    #[arg(long, env = "MINDORA_OCR_TESSERACT", default_value = "tesseract")]
    pub ocr_tesseract: String,

    /// Apps whose schemas are migrated at start-up (comma separated).
    #[arg(long, env = "MINDORA_APPS", value_delimiter = ',')]
    pub apps: Vec<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            database_url: None,
            database_max_connections: 8,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
            s3_force_path_style: true,
            max_object_bytes: 100 * 1024 * 1024,
            max_parsed_bytes: 32 * 1024 * 1024,
            tmp_dir: None,
            embed_base_url: None,
            embed_api_key: None,
            embed_model: OPENAI_EMBED_MODEL.into(),
            embed_dimensions: OPENAI_EMBED_DIMENSIONS,
            embed_send_dimensions: false,
            embed_batch_size: 64,
            embed_concurrency: 4,
            embed_retries: 3,
            chat_model: None,
            elasticsearch_url: None,
            elasticsearch_username: None,
            elasticsearch_password: None,
            qdrant_url: None,
            qdrant_api_key: None,
            qdrant_distance: QdrantDistance::Cosine,
            amqp_url: None,
            notify_queue: "user_notifications".into(),
            notify_redis_url: None,
            chunk_size: 1200,
            chunk_overlap: 200,
            extract_timeout_secs: 300,
            ocr: None,
            ocr_dpi: 300,
            ocr_page_timeout_secs: 120,
            ocr_concurrency: 0,
            ocr_memory_mb: 2048,
            ocr_tesseract: "tesseract".into(),
            apps: Vec::new(),
        }
    }
}

/// Embeddings endpoint used when no API key is set: the stack's local Ollama (compose profile
/// `ollama`), through its OpenAI-compatible API.
pub const LOCAL_EMBED_BASE_URL: &str = "http://ollama:11434/v1";
/// Model of the local default: multilingual (Chinese is the normal case), served by Ollama.
pub const LOCAL_EMBED_MODEL: &str = "bge-m3";
/// Vector size of [`LOCAL_EMBED_MODEL`].
pub const LOCAL_EMBED_DIMENSIONS: u32 = 1024;
/// The OpenAI defaults of `--embed-model` / `--embed-dimensions`.
const OPENAI_EMBED_MODEL: &str = "text-embedding-3-small";
const OPENAI_EMBED_DIMENSIONS: u32 = 1536;

/// Languages OCR uses when a job turns it on with `options.ocr = true` and the worker names none.
pub const DEFAULT_OCR_LANGUAGES: &str = "chi_sim+eng";

impl PipelineConfig {
    /// The embedding API key, if one is set (an empty value, as compose passes an unset one,
    /// is none).
    pub fn embed_key(&self) -> Option<&str> {
        self.embed_api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    }

    /// The worker's embedding default: with no API key, embed through the local Ollama
    /// ([`LOCAL_EMBED_BASE_URL`], [`LOCAL_EMBED_MODEL`], [`LOCAL_EMBED_DIMENSIONS`]) rather than
    /// not at all. Only what was left unset (base URL) or at OpenAI's defaults (model,
    /// dimensions) changes; a key, a base URL or a model of the caller's own is kept.
    pub fn with_local_embedding_default(mut self) -> Self {
        if self.embed_key().is_some() {
            return self;
        }
        if self
            .embed_base_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            self.embed_base_url = Some(LOCAL_EMBED_BASE_URL.into());
        }
        if self.embed_model == OPENAI_EMBED_MODEL {
            self.embed_model = LOCAL_EMBED_MODEL.into();
            if self.embed_dimensions == OPENAI_EMBED_DIMENSIONS {
                self.embed_dimensions = LOCAL_EMBED_DIMENSIONS;
            }
        }
        self
    }

    /// OCR settings for a document: `requested` is the job's (or app's) `ocr` option — `false`
    /// off, `true` on with the worker's languages, a string on with those languages; `None`
    /// follows the worker's `--ocr`.
    pub fn ocr_options(
        &self,
        requested: Option<&serde_json::Value>,
    ) -> Option<crate::extract::ocr::OcrOptions> {
        use serde_json::Value;
        let worker = self.ocr.as_deref().map(str::trim).filter(|l| !l.is_empty());
        let languages = match requested {
            None | Some(Value::Null) => worker?.to_string(),
            Some(Value::Bool(false)) => return None,
            Some(Value::String(s)) if s.trim().is_empty() || s == "off" => return None,
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => worker.unwrap_or(DEFAULT_OCR_LANGUAGES).to_string(),
        };
        let concurrency = match self.ocr_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Some(crate::extract::ocr::OcrOptions {
            languages,
            dpi: self.ocr_dpi,
            page_timeout: std::time::Duration::from_secs(self.ocr_page_timeout_secs.max(1)),
            memory_bytes: self.ocr_memory_mb.saturating_mul(1024 * 1024),
            concurrency,
            program: self.ocr_tesseract.clone().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: PipelineConfig,
    }

    #[test]
    fn no_api_key_means_the_local_ollama_default() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["w"].iter().chain(args))
                .map(|c| c.config.with_local_embedding_default())
                .unwrap()
        };
        let local = parse(&[]);
        assert_eq!(local.embed_base_url.as_deref(), Some(LOCAL_EMBED_BASE_URL));
        assert_eq!(local.embed_model, "bge-m3");
        assert_eq!(local.embed_dimensions, 1024);
        // Compose passes an unset key and URL as empty values.
        let empty = parse(&["--embed-api-key", "", "--embed-base-url", ""]);
        assert_eq!(empty.embed_base_url.as_deref(), Some(LOCAL_EMBED_BASE_URL));
        assert_eq!(empty.embed_model, "bge-m3");
        // Another keyless server keeps its URL; a model of the caller's own keeps its size.
        let other = parse(&[
            "--embed-base-url",
            "http://vllm:8000/v1",
            "--embed-model",
            "nomic-embed-text",
            "--embed-dimensions",
            "768",
        ]);
        assert_eq!(other.embed_base_url.as_deref(), Some("http://vllm:8000/v1"));
        assert_eq!(
            (other.embed_model.as_str(), other.embed_dimensions),
            ("nomic-embed-text", 768)
        );
        // With a key nothing changes: OpenAI's defaults, no base URL invented.
        let openai = parse(&["--embed-api-key", "sk-x"]);
        assert_eq!(openai.embed_base_url, None);
        assert_eq!(
            (openai.embed_model.as_str(), openai.embed_dimensions),
            ("text-embedding-3-small", 1536)
        );
    }

    #[test]
    fn qdrant_distance_flag_defaults_to_cosine_and_takes_any_case() {
        let parse = |args: &[&str]| Cli::try_parse_from(["w"].iter().chain(args)).map(|c| c.config);
        assert_eq!(
            parse(&[]).unwrap().qdrant_distance,
            PipelineConfig::default().qdrant_distance
        );
        assert_eq!(parse(&[]).unwrap().qdrant_distance, QdrantDistance::Cosine);
        for (v, d) in [
            ("Cosine", QdrantDistance::Cosine),
            ("dot", QdrantDistance::Dot),
            ("EUCLID", QdrantDistance::Euclid),
            ("Manhattan", QdrantDistance::Manhattan),
        ] {
            assert_eq!(parse(&["--qdrant-distance", v]).unwrap().qdrant_distance, d);
        }
        let err = parse(&["--qdrant-distance", "hamming"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Cosine") && err.contains("Manhattan"), "{err}");
    }
}
