//! Values passed between stages, and the naming rules derived from an app name.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::PipelineError;

/// Namespace for deterministic ids, so the same (app, bucket, key) always maps to the same
/// document id and re-processing replaces rather than duplicates.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x7a1c_5e0e_3b5f_4c1e_9d2a_6f7e_8b9c_0d1e);

/// A validated app name: lowercase letters, digits, `_` and `-`, starting with a letter.
/// It names a PostgreSQL schema, an Elasticsearch index family and a Qdrant collection, so it is
/// checked once here instead of being quoted differently in each place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App(String);

impl App {
    /// Validates `name`; an invalid name is a permanent argument error.
    pub fn parse(name: &str) -> Result<Self, PipelineError> {
        let ok = !name.is_empty()
            && name.len() <= 48
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(App(name.to_string()))
        } else {
            Err(PipelineError::InvalidArgument(format!(
                "app {name:?} must be 1-48 characters of a-z, 0-9, '_' or '-', starting with a letter"
            )))
        }
    }

    /// The app name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// PostgreSQL schema holding this app's tables (`mindora_` + name, `-` as `_`).
    pub fn schema(&self) -> String {
        format!("mindora_{}", self.0.replace('-', "_"))
    }

    /// Elasticsearch index for documents indexed in the given month.
    pub fn es_index(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        format!("{}-documents-{}", self.0, at.format("%Y.%m"))
    }

    /// Pattern matching every monthly index of the app (used to replace a document's chunks).
    pub fn es_index_pattern(&self) -> String {
        format!("{}-documents-*", self.0)
    }

    /// Name of the app's index template.
    pub fn es_template(&self) -> String {
        format!("{}-documents", self.0)
    }

    /// Qdrant collection of the app.
    pub fn qdrant_collection(&self) -> String {
        format!("{}_documents", self.0)
    }
}

/// Where a document lives and which id it has; every stage function takes these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocumentRef {
    /// App (tenant) name.
    pub app: String,
    /// S3 bucket.
    pub bucket: String,
    /// S3 key.
    pub key: String,
    /// Stable document id: given by the caller or derived from app/bucket/key.
    pub document_id: Uuid,
    /// User to notify, if any.
    pub user_id: Option<String>,
}

impl DocumentRef {
    /// Builds a reference, deriving the id from the location when none is given so that
    /// re-processing the same object replaces its chunks.
    pub fn new(
        app: &App,
        bucket: &str,
        key: &str,
        document_id: Option<&str>,
        user_id: Option<String>,
    ) -> Result<Self, PipelineError> {
        if bucket.is_empty() || key.is_empty() {
            return Err(PipelineError::InvalidArgument(
                "bucket and key must not be empty".into(),
            ));
        }
        let document_id = match document_id {
            Some(s) => Uuid::parse_str(s).unwrap_or_else(|_| {
                // Callers may use their own ids (e.g. "invoice-42"); map them to a stable UUID.
                Uuid::new_v5(
                    &ID_NAMESPACE,
                    format!("{}\0id\0{s}", app.as_str()).as_bytes(),
                )
            }),
            None => Uuid::new_v5(
                &ID_NAMESPACE,
                format!("{}\0{bucket}\0{key}", app.as_str()).as_bytes(),
            ),
        };
        Ok(DocumentRef {
            app: app.as_str().to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            document_id,
            user_id,
        })
    }

    /// File name shown in error messages: the last path segment of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Deterministic id of chunk `index` of a document: also its Qdrant point id and (as a string)
/// its Elasticsearch `_id`, which is what makes re-indexing replace instead of duplicate.
pub fn chunk_id(document_id: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{document_id}\0chunk\0{index}").as_bytes(),
    )
}

/// Bytes of a fetched object and what we know about them.
#[derive(Debug, Clone)]
pub struct FetchedObject {
    /// Whole object.
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Content-Type stored with the object, if any (a hint only; detection uses the bytes).
    pub content_type: Option<String>,
    /// The share of the process's download budget these bytes hold; released when the object
    /// is dropped (after extraction). `None` for objects that did not come from a budget.
    pub reservation: Option<MemoryReservation>,
}

/// A held share of [`crate::fetch::MemoryBudget`]; cloning shares it, the last drop frees it.
#[derive(Debug, Clone)]
pub struct MemoryReservation {
    _permit: std::sync::Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl MemoryReservation {
    /// Wraps a permit taken from the budget.
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        MemoryReservation {
            _permit: std::sync::Arc::new(permit),
        }
    }
}

/// Text of a document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExtractedText {
    /// Detected type, e.g. "pdf", "docx", "xlsx", "csv", "html", "markdown", "text".
    pub kind: String,
    /// MIME type of the detected kind.
    pub mime: String,
    /// Pages (PDF), sheets (spreadsheets) or 1.
    pub pages: u32,
    /// Plain text; paragraphs separated by blank lines.
    pub text: String,
    /// PDF only: the pages that yielded text, as ranges (`1-12,14`), so a job's result shows
    /// which pages are searchable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_with_text: Option<String>,
    /// PDF only: the pages whose text came from OCR (ranges, within `pages_with_text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_ocr: Option<String>,
    /// Mean Tesseract word confidence (0-100) over the OCR'd pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_confidence: Option<f32>,
    /// Problems that did not stop extraction (damaged structure repaired, pages of images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One chunk of text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    /// Deterministic id, see [`chunk_id`].
    pub id: Uuid,
    /// Position in the document, from 0.
    pub index: usize,
    /// The text.
    pub text: String,
    /// Character offset of the chunk's start in the document text.
    pub char_start: usize,
    /// Character offset one past the chunk's end.
    pub char_end: usize,
    /// Titles of the headings the chunk sits under, outermost first (stored and indexed with
    /// it, so a chunk found alone still says which section it is from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    /// 1-based page (or sheet) the chunk starts on, for paged formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

/// Metadata indexed with every chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkMeta {
    /// Document the chunk belongs to.
    pub document: DocumentRef,
    /// Detected type of the document.
    pub kind: String,
    /// Pages of the document.
    pub pages: u32,
    /// Id of the run that indexed it; chunks of older runs are removed after indexing.
    pub run_id: Uuid,
    /// Caller metadata from `options.metadata`.
    pub metadata: serde_json::Value,
}

/// Summary and keywords from the analyze stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Analysis {
    /// A few sentences about the document.
    pub summary: String,
    /// Key terms.
    pub keywords: Vec<String>,
}
