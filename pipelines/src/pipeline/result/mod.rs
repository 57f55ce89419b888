//! What a job returns (and what the run record and the notification carry), as typed structs.
//!
//! Python reads these back as JSON. They are converted with `serde_json::to_value`, whose
//! `Map` is key-sorted in this workspace (serde_json's `preserve_order` is off), so the bytes
//! are the same as those of the `Map`s built by hand before: the tests below pin them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::args::Args;
use crate::error::PipelineError;
use crate::index_fulltext::IndexReport;
use crate::model::{Analysis, ExtractedText};
use crate::notify::NotifyReport;
use crate::JobInfo;

/// The document every result names.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DocFields {
    pub app: String,
    pub bucket: String,
    pub document_id: String,
    pub key: String,
}

impl DocFields {
    pub fn of(a: &Args) -> Self {
        DocFields {
            app: a.app.as_str().to_string(),
            bucket: a.doc.bucket.clone(),
            document_id: a.doc.document_id.to_string(),
            key: a.doc.key.clone(),
        }
    }
}

/// What extraction wants the caller to know: which PDF pages had text, OCR, and warnings
/// (damaged file repaired, pages that are images only). Each key is absent when it has
/// nothing to say.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct ExtractNotes {
    /// Present (possibly `null`) exactly when OCR ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr_confidence: Option<Option<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages_ocr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages_with_text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ExtractNotes {
    pub fn of(text: &ExtractedText) -> Self {
        ExtractNotes {
            ocr_confidence: text.pages_ocr.as_ref().map(|_| text.ocr_confidence),
            pages_ocr: text.pages_ocr.clone(),
            pages_with_text: text.pages_with_text.clone(),
            warnings: text.warnings.clone(),
        }
    }
}

/// Where the chunks went; a key per index that ran.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Indexed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulltext: Option<IndexReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<IndexReport>,
}

impl Indexed {
    pub fn any(&self) -> bool {
        self.fulltext.is_some() || self.vectors.is_some()
    }
}

/// `pipelines.process_document`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Processed {
    #[serde(flatten)]
    pub doc: DocFields,
    /// `null` when the analyze stage did not run.
    pub analysis: Option<Analysis>,
    pub characters: usize,
    pub chunks: usize,
    pub indexed: Indexed,
    pub kind: String,
    #[serde(flatten)]
    pub notes: ExtractNotes,
    pub pages: u32,
    pub sha256: String,
    pub size_bytes: usize,
    pub status: &'static str,
}

/// The result of one function, before the run's id and timings are added.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum StageResult {
    Processed(Processed),
    Fetched {
        #[serde(flatten)]
        doc: DocFields,
        content_type: Option<String>,
        sha256: String,
        size_bytes: usize,
    },
    Extracted {
        #[serde(flatten)]
        doc: DocFields,
        characters: usize,
        kind: String,
        #[serde(flatten)]
        notes: ExtractNotes,
        pages: u32,
    },
    Chunked {
        #[serde(flatten)]
        doc: DocFields,
        chunks: usize,
    },
    Embedded {
        #[serde(flatten)]
        doc: DocFields,
        chunks: usize,
        dimensions: usize,
    },
    IndexedChunks {
        #[serde(flatten)]
        doc: DocFields,
        chunks: usize,
        indexed: Indexed,
    },
    Analyzed {
        #[serde(flatten)]
        doc: DocFields,
        analysis: Option<Analysis>,
    },
    Recorded {
        #[serde(flatten)]
        doc: DocFields,
        status: &'static str,
    },
    Notified {
        #[serde(flatten)]
        doc: DocFields,
        notified: NotifyReport,
    },
}

/// A stage's duration in the run's `timings_ms`: tenths of a millisecond for the timed stages
/// (`12.3`), whole milliseconds for the record write (`12`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub(super) enum Millis {
    Tenths(f64),
    Whole(u64),
}

/// Stage name → duration; one key per stage that ran.
pub(super) type Timings = BTreeMap<&'static str, Millis>;

/// The job's return value.
#[derive(Debug, Clone, Serialize)]
pub(super) struct JobResult {
    #[serde(flatten)]
    pub result: StageResult,
    /// Set by `process_document` when it notified (`pipelines.notify` reports in its result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notified: Option<NotifyReport>,
    pub run_id: String,
    pub timings_ms: Timings,
}

/// The notification message (a JSON object) sent on RabbitMQ and Redis.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Notification<'a> {
    pub app: &'a str,
    pub at: String,
    pub bucket: &'a str,
    pub chunks: Value,
    pub document_id: String,
    /// The error message, or the stored document's `error` for `pipelines.notify`.
    pub error: Value,
    pub error_kind: Option<&'static str>,
    pub event: &'static str,
    pub file_name: &'a str,
    pub job_id: &'a str,
    pub key: &'a str,
    pub pages: Value,
    pub retryable: Option<bool>,
    pub status: String,
    pub user_id: Option<&'a str>,
}

impl<'a> Notification<'a> {
    /// `pages` and `chunks` come from the result (or the stored document), `null` if unknown.
    pub fn new(
        a: &'a Args,
        job: &'a JobInfo,
        event: &'static str,
        (pages, chunks): (Value, Value),
        error: Option<&PipelineError>,
    ) -> Self {
        Notification {
            app: a.app.as_str(),
            at: chrono::Utc::now().to_rfc3339(),
            bucket: &a.doc.bucket,
            chunks,
            document_id: a.doc.document_id.to_string(),
            error: error.map_or(Value::Null, |e| Value::String(e.to_string())),
            error_kind: error.map(|e| e.kind()),
            event,
            file_name: a.doc.file_name(),
            job_id: &job.id,
            key: &a.doc.key,
            pages,
            retryable: error.map(|e| e.is_retryable()),
            status: if error.is_some() { "failed" } else { "done" }.to_string(),
            user_id: a.doc.user_id.as_deref(),
        }
    }
}

/// Serializes a result type into the JSON value returned to the worker. The types above hold
/// only strings, numbers, options and maps with string keys, which always serialize.
pub(super) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
