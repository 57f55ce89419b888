//! Typed errors of the pipelines.
//!
//! The worker needs two things from a failed job: a message a person can act on (naming the file
//! and the problem) and whether trying again later could help. [`PipelineError::is_retryable`]
//! answers the second; the `Display` text is the first.

use thiserror::Error;

/// Why a document's bytes could not be turned into text. Kept separate from [`PipelineError`]
/// so extractors stay free of job context (the caller adds the file name).
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum ExtractProblem {
    /// Zero bytes, or a well-formed file with no text in it.
    #[error("the file is empty (no text could be found)")]
    Empty,
    /// Password-protected content we cannot read (Office files: no password support).
    #[error("the {0} is encrypted (password-protected); upload an unencrypted copy")]
    Encrypted(&'static str),
    /// Encrypted with a user password and the job gave none.
    #[error("the {0} is encrypted; a password is needed: pass it as options.password, or upload an unencrypted copy")]
    PasswordNeeded(&'static str),
    /// The job's `options.password` does not open the file.
    #[error("the {0} is encrypted and the password in options.password does not open it")]
    WrongPassword(&'static str),
    /// Pages are images only (scans): there is no text to extract without OCR.
    #[error("the PDF has no text layer ({pages} page(s) of images only); OCR needed")]
    NoTextLayer {
        /// Page count.
        pages: u32,
    },
    /// Extraction ran past the per-document time limit.
    #[error("text extraction exceeded the time limit of {seconds} s after {done} of {pages} page(s) (MINDORA_EXTRACT_TIMEOUT_SECS)")]
    TimedOut {
        /// The limit.
        seconds: u64,
        /// Pages finished when the limit was hit.
        done: u32,
        /// Page count.
        pages: u32,
    },
    /// OCR was asked for but tesseract (or one of the languages) is missing on this worker.
    #[error("{0}")]
    OcrUnavailable(String),
    /// Tesseract ran past the per-page limit on one page and was killed.
    #[error("OCR of page {page} exceeded the per-page time limit of {seconds} s and was stopped (MINDORA_OCR_PAGE_TIMEOUT_SECS)")]
    OcrTimedOut {
        /// 1-based page number.
        page: u32,
        /// The limit.
        seconds: u64,
    },
    /// Tesseract failed on a page (crashed, ran out of its memory limit, wrote nothing).
    #[error("OCR of page {page} failed: {detail}")]
    OcrFailed {
        /// 1-based page number.
        page: u32,
        /// What went wrong, with tesseract's own last words.
        detail: String,
    },
    /// The engine for this format is not installed/loadable on this worker.
    #[error("the PDF engine is unavailable on this worker: {0}")]
    EngineUnavailable(String),
    /// The bytes claim a format but do not parse as it.
    #[error("the {format} is corrupt or truncated: {detail}")]
    Corrupt {
        /// Human name of the detected format, e.g. "PDF".
        format: &'static str,
        /// What the parser reported.
        detail: String,
    },
    /// The PDF engine died on this file (crashed, or went over its memory limit) in its
    /// child process; the worker itself is unharmed.
    #[error("the PDF engine failed on this file: {0}")]
    EngineFailed(String),
    /// A format we recognise but do not extract (e.g. legacy .doc, images).
    #[error("unsupported document type: {0}")]
    Unsupported(String),
    /// The local copy of the document could not be read (the worker's temporary directory).
    #[error("the downloaded copy could not be read: {0}")]
    Unreadable(String),
    /// The consumer of the pages (chunk, embed, index) stopped the extraction; its own error
    /// is the one to report.
    #[error("extraction stopped: {0}")]
    Stopped(String),
}

/// Every way a pipeline function can fail.
#[derive(Error, Debug)]
pub enum PipelineError {
    /// The job's args/kwargs are wrong (missing app, bad key, unknown option).
    #[error("invalid job arguments: {0}")]
    InvalidArgument(String),
    /// The rq function name is not one of [`crate::Function`].
    #[error("unknown pipelines function {0:?}")]
    UnknownFunction(String),
    /// A service the stage needs has no configuration (env var unset).
    #[error("{what} is not configured: set {var}")]
    NotConfigured {
        /// The missing service, e.g. "PostgreSQL".
        what: &'static str,
        /// The environment variable that configures it.
        var: &'static str,
    },
    /// Configuration is present but contradicts the target (e.g. vector dimension mismatch).
    #[error("configuration error: {0}")]
    Config(String),
    /// The object does not exist in the bucket.
    #[error("s3://{bucket}/{key}: object not found")]
    ObjectNotFound {
        /// Bucket asked for.
        bucket: String,
        /// Key asked for.
        key: String,
    },
    /// The object exceeds the configured size limit.
    #[error("s3://{bucket}/{key}: object is {size} bytes, over the limit of {limit} bytes (MINDORA_MAX_OBJECT_BYTES)")]
    ObjectTooLarge {
        /// Bucket of the object.
        bucket: String,
        /// Key of the object.
        key: String,
        /// Its size in bytes.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The document could not be read.
    #[error("{file}: {problem}")]
    Extract {
        /// File name (the object key) so the user knows which upload failed.
        file: String,
        /// What is wrong with it.
        problem: ExtractProblem,
    },
    /// A call to an external service failed (S3, embeddings, Elasticsearch, Qdrant, PostgreSQL,
    /// RabbitMQ, Redis).
    #[error("{service}: {message}")]
    Service {
        /// Which service, e.g. "Elasticsearch".
        service: &'static str,
        /// What went wrong, with the service's own words where it gave any.
        message: String,
        /// True for transient failures (connection refused, 429, 5xx, timeouts).
        retryable: bool,
    },
    /// A chained stage ran before the stage that produces its input.
    #[error("document {document_id}: no {what} stored; run {stage} first")]
    MissingInput {
        /// Document whose intermediate is missing.
        document_id: String,
        /// What is missing, e.g. "extracted text".
        what: &'static str,
        /// The rq function that produces it.
        stage: &'static str,
    },
}

impl PipelineError {
    /// Whether re-running the same job later may succeed. The worker uses this to choose between
    /// a retry (transient outage) and failing the job for good (bad input or configuration).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PipelineError::Service {
                retryable: true,
                ..
            }
        )
    }

    /// Short machine-readable class, stored with failed documents and sent in notifications.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineError::InvalidArgument(_) => "invalid_argument",
            PipelineError::UnknownFunction(_) => "unknown_function",
            PipelineError::NotConfigured { .. } => "not_configured",
            PipelineError::Config(_) => "config",
            PipelineError::ObjectNotFound { .. } => "object_not_found",
            PipelineError::ObjectTooLarge { .. } => "object_too_large",
            PipelineError::Extract { problem, .. } => match problem {
                ExtractProblem::Empty => "empty_document",
                ExtractProblem::Encrypted(_)
                | ExtractProblem::PasswordNeeded(_)
                | ExtractProblem::WrongPassword(_) => "encrypted_document",
                ExtractProblem::NoTextLayer { .. } => "no_text_layer",
                ExtractProblem::TimedOut { .. } => "extract_timeout",
                ExtractProblem::EngineUnavailable(_) => "engine_unavailable",
                ExtractProblem::EngineFailed(_) => "engine_failed",
                ExtractProblem::OcrUnavailable(_) => "ocr_unavailable",
                ExtractProblem::OcrTimedOut { .. } => "ocr_timeout",
                ExtractProblem::OcrFailed { .. } => "ocr_failed",
                ExtractProblem::Corrupt { .. } => "corrupt_document",
                ExtractProblem::Unsupported(_) => "unsupported_document",
                ExtractProblem::Unreadable(_) => "io_error",
                ExtractProblem::Stopped(_) => "stopped",
            },
            PipelineError::Service { .. } => "service",
            PipelineError::MissingInput { .. } => "missing_input",
        }
    }

    /// Shorthand for a transient service failure.
    pub(crate) fn transient(service: &'static str, message: impl Into<String>) -> Self {
        PipelineError::Service {
            service,
            message: message.into(),
            retryable: true,
        }
    }

    /// Shorthand for a service failure that retrying will not fix (e.g. a 400 answer).
    pub(crate) fn permanent(service: &'static str, message: impl Into<String>) -> Self {
        PipelineError::Service {
            service,
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<sqlx::Error> for PipelineError {
    fn from(e: sqlx::Error) -> Self {
        let retryable = matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
        ) || matches!(&e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("40") || c.starts_with("53") || c.starts_with("57P")));
        PipelineError::Service {
            service: "PostgreSQL",
            message: e.to_string(),
            retryable,
        }
    }
}

impl From<sqlx::migrate::MigrateError> for PipelineError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => PipelineError::permanent("PostgreSQL migrations", other.to_string()),
        }
    }
}
