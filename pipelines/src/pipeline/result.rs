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
mod tests {
    //! The expected strings are results captured from the map-building code these structs
    //! replaced (the `pipeline` integration tests, before the change), byte for byte.
    use serde_json::{json, Map};

    use super::*;

    fn doc(app: &str, key: &str, id: &str) -> DocFields {
        DocFields {
            app: app.into(),
            bucket: format!("b-{app}"),
            document_id: id.into(),
            key: key.into(),
        }
    }

    fn report(indexed: usize, target: &str) -> IndexReport {
        IndexReport {
            indexed,
            removed: 0,
            target: target.into(),
        }
    }

    fn notified(queue: &str, app: &str, receivers: i64) -> NotifyReport {
        NotifyReport {
            amqp_queue: Some(queue.into()),
            redis_channel: Some((format!("mindora:{app}:notifications"), receivers)),
        }
    }

    fn bytes(
        result: StageResult,
        notified: Option<NotifyReport>,
        run: &str,
        t: &[(&'static str, Millis)],
    ) -> String {
        let out = JobResult {
            result,
            notified,
            run_id: run.into(),
            timings_ms: t.iter().copied().collect(),
        };
        to_json(&out).to_string()
    }

    use Millis::{Tenths, Whole};

    #[test]
    fn process_document_result_is_byte_compatible() {
        let app = "ta36df852";
        let got = bytes(
            StageResult::Processed(Processed {
                doc: doc(
                    app,
                    "reports/q1.pdf",
                    "27926810-0a61-51fd-ab97-8c6eee4814a0",
                ),
                analysis: None,
                characters: 2923,
                chunks: 9,
                indexed: Indexed {
                    fulltext: Some(report(9, "ta36df852-documents-2026.12")),
                    vectors: Some(report(9, "ta36df852_documents")),
                },
                kind: "pdf".into(),
                notes: ExtractNotes {
                    pages_with_text: Some("1-3".into()),
                    ..Default::default()
                },
                pages: 3,
                sha256: "c6fa4637e5c77546a640684a3ac8ae5f13c644acb148e76ddf83d35098a819ee".into(),
                size_bytes: 4189,
                status: "done",
            }),
            Some(notified("user_notifications_test_c551cae0", app, 1)),
            "5bfd5e70-a95d-46df-8574-ef5062ca313c",
            &[
                ("chunk", Tenths(0.2)),
                ("embed", Tenths(15.3)),
                ("extract", Tenths(20.3)),
                ("fetch", Tenths(5.5)),
                ("index", Tenths(58.8)),
                ("record", Whole(106)),
            ],
        );
        assert_eq!(
            got,
            r#"{"analysis":null,"app":"ta36df852","bucket":"b-ta36df852","characters":2923,"chunks":9,"document_id":"27926810-0a61-51fd-ab97-8c6eee4814a0","indexed":{"fulltext":{"indexed":9,"removed":0,"target":"ta36df852-documents-2026.12"},"vectors":{"indexed":9,"removed":0,"target":"ta36df852_documents"}},"key":"reports/q1.pdf","kind":"pdf","notified":{"amqp_queue":"user_notifications_test_c551cae0","redis_channel":["mindora:ta36df852:notifications",1]},"pages":3,"pages_with_text":"1-3","run_id":"5bfd5e70-a95d-46df-8574-ef5062ca313c","sha256":"c6fa4637e5c77546a640684a3ac8ae5f13c644acb148e76ddf83d35098a819ee","size_bytes":4189,"status":"done","timings_ms":{"chunk":0.2,"embed":15.3,"extract":20.3,"fetch":5.5,"index":58.8,"record":106}}"#
        );
    }

    #[test]
    fn chained_stage_results_are_byte_compatible() {
        let app = "t2a6e19ca";
        let id = "59754d69-da48-531a-b8ee-21f28c56a912";
        let d = || doc(app, "memo.md", id);
        let cases = [
            (
                bytes(
                    StageResult::Extracted {
                        doc: d(),
                        characters: 66,
                        kind: "markdown".into(),
                        notes: ExtractNotes::default(),
                        pages: 1,
                    },
                    None,
                    "52291c63-cc71-40b4-9f0d-e1753620a613",
                    &[
                        ("extract", Tenths(0.3)),
                        ("fetch", Tenths(4.0)),
                        ("record", Whole(5)),
                    ],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","characters":66,"document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","kind":"markdown","pages":1,"run_id":"52291c63-cc71-40b4-9f0d-e1753620a613","timings_ms":{"extract":0.3,"fetch":4.0,"record":5}}"#,
            ),
            (
                bytes(
                    StageResult::Chunked {
                        doc: d(),
                        chunks: 1,
                    },
                    None,
                    "85052d06-2e29-49b9-abff-a94a5960f1ba",
                    &[("chunk", Tenths(0.0)), ("record", Whole(10))],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","chunks":1,"document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","run_id":"85052d06-2e29-49b9-abff-a94a5960f1ba","timings_ms":{"chunk":0.0,"record":10}}"#,
            ),
            (
                bytes(
                    StageResult::Embedded {
                        doc: d(),
                        chunks: 1,
                        dimensions: 768,
                    },
                    None,
                    "42d543bb-e8f4-4be4-9a72-0545dba6d921",
                    &[("embed", Tenths(3.2)), ("record", Whole(6))],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","chunks":1,"dimensions":768,"document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","run_id":"42d543bb-e8f4-4be4-9a72-0545dba6d921","timings_ms":{"embed":3.2,"record":6}}"#,
            ),
            (
                bytes(
                    StageResult::IndexedChunks {
                        doc: d(),
                        chunks: 1,
                        indexed: Indexed {
                            fulltext: Some(report(1, "t2a6e19ca-documents-2026.12")),
                            vectors: Some(report(1, "t2a6e19ca_documents")),
                        },
                    },
                    None,
                    "3c81509d-da43-443d-ac17-dd5da2403152",
                    &[("index", Tenths(61.7)), ("record", Whole(7))],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","chunks":1,"document_id":"59754d69-da48-531a-b8ee-21f28c56a912","indexed":{"fulltext":{"indexed":1,"removed":0,"target":"t2a6e19ca-documents-2026.12"},"vectors":{"indexed":1,"removed":0,"target":"t2a6e19ca_documents"}},"key":"memo.md","run_id":"3c81509d-da43-443d-ac17-dd5da2403152","timings_ms":{"index":61.7,"record":7}}"#,
            ),
            (
                bytes(
                    StageResult::Analyzed {
                        doc: d(),
                        analysis: Some(Analysis {
                            summary: "A document about # Memo Budget.".into(),
                            keywords: vec!["#".into(), "Memo".into(), "Budget".into()],
                        }),
                    },
                    None,
                    "62941d11-d112-49df-8e0d-34ebb1d73e92",
                    &[("analyze", Tenths(1.7)), ("record", Whole(6))],
                ),
                r##"{"analysis":{"keywords":["#","Memo","Budget"],"summary":"A document about # Memo Budget."},"app":"t2a6e19ca","bucket":"b-t2a6e19ca","document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","run_id":"62941d11-d112-49df-8e0d-34ebb1d73e92","timings_ms":{"analyze":1.7,"record":6}}"##,
            ),
            (
                bytes(
                    StageResult::Recorded {
                        doc: d(),
                        status: "done",
                    },
                    None,
                    "57aa669f-c921-44aa-8fbf-6adb83c9d7de",
                    &[("record", Whole(2))],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","run_id":"57aa669f-c921-44aa-8fbf-6adb83c9d7de","status":"done","timings_ms":{"record":2}}"#,
            ),
            (
                bytes(
                    StageResult::Notified {
                        doc: d(),
                        notified: notified("user_notifications_test_8686b359", app, 0),
                    },
                    None,
                    "f6ff3a4b-930f-4c63-a6af-5db3b5b7fdfa",
                    &[("record", Whole(4))],
                ),
                r#"{"app":"t2a6e19ca","bucket":"b-t2a6e19ca","document_id":"59754d69-da48-531a-b8ee-21f28c56a912","key":"memo.md","notified":{"amqp_queue":"user_notifications_test_8686b359","redis_channel":["mindora:t2a6e19ca:notifications",0]},"run_id":"f6ff3a4b-930f-4c63-a6af-5db3b5b7fdfa","timings_ms":{"record":4}}"#,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    /// The map code `ExtractNotes` and `Fetched` replaced, kept here as the reference.
    fn old_extract_notes(m: &mut Map<String, Value>, text: &ExtractedText) {
        if let Some(p) = &text.pages_with_text {
            m.insert("pages_with_text".into(), json!(p));
        }
        if let Some(p) = &text.pages_ocr {
            m.insert("pages_ocr".into(), json!(p));
            m.insert("ocr_confidence".into(), json!(text.ocr_confidence));
        }
        if !text.warnings.is_empty() {
            m.insert("warnings".into(), json!(text.warnings));
        }
    }

    #[test]
    fn extract_notes_and_fetch_match_the_old_maps() {
        let texts = [
            ExtractedText::default(),
            ExtractedText {
                pages_with_text: Some("1,3".into()),
                pages_ocr: Some("2".into()),
                ocr_confidence: Some(0.93),
                warnings: vec!["repaired a damaged file".into()],
                ..Default::default()
            },
            ExtractedText {
                pages_ocr: Some("1-4".into()),
                ocr_confidence: None,
                ..Default::default()
            },
            ExtractedText {
                ocr_confidence: Some(0.5),
                warnings: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        ];
        for text in &texts {
            let mut old = Map::new();
            old_extract_notes(&mut old, text);
            assert_eq!(
                to_json(&ExtractNotes::of(text)).to_string(),
                Value::Object(old).to_string()
            );
        }
        for content_type in [None, Some("application/pdf".to_string())] {
            let d = doc("app1", "k", "id");
            let mut old = Map::new();
            old.insert("document_id".into(), json!("id"));
            old.insert("app".into(), json!("app1"));
            old.insert("bucket".into(), json!("b-app1"));
            old.insert("key".into(), json!("k"));
            old.insert("sha256".into(), json!("ab"));
            old.insert("size_bytes".into(), json!(12));
            old.insert("content_type".into(), json!(content_type));
            let new = StageResult::Fetched {
                doc: d,
                content_type,
                sha256: "ab".into(),
                size_bytes: 12,
            };
            assert_eq!(to_json(&new).to_string(), Value::Object(old).to_string());
        }
    }

    /// The `json!` the notification was built with before, kept here as the reference.
    fn old_notification(
        a: &Args,
        job: &JobInfo,
        event: &str,
        result: &Value,
        error: Option<&PipelineError>,
    ) -> Value {
        json!({
            "event": event,
            "app": a.app.as_str(),
            "document_id": a.doc.document_id.to_string(),
            "bucket": a.doc.bucket,
            "key": a.doc.key,
            "file_name": a.doc.file_name(),
            "user_id": a.doc.user_id,
            "status": if error.is_some() { "failed" } else { "done" },
            "pages": result.get("pages").cloned().unwrap_or(Value::Null),
            "chunks": result.get("chunks").cloned().unwrap_or(Value::Null),
            "error": error.map(|e| e.to_string()),
            "error_kind": error.map(|e| e.kind()),
            "retryable": error.map(|e| e.is_retryable()),
            "job_id": job.id,
            "at": "AT",
        })
    }

    #[test]
    fn notification_matches_the_old_message() {
        let job = JobInfo {
            id: "j1".into(),
            queue: "q".into(),
            source: "redis".into(),
        };
        let failure = PipelineError::Service {
            service: "Qdrant",
            message: "down".into(),
            retryable: true,
        };
        for user in [json!(null), json!("u-1")] {
            let kw = json!({"app": "acme", "bucket": "docs", "key": "dir/a.pdf", "user_id": user});
            let Value::Object(kw) = kw else {
                unreachable!()
            };
            let a = super::super::args::parse_args(&[], &kw).unwrap();
            for (result, error) in [
                (json!({"pages": 3, "chunks": 9}), None),
                (Value::Null, Some(&failure)),
            ] {
                let counts = (
                    result.get("pages").cloned().unwrap_or(Value::Null),
                    result.get("chunks").cloned().unwrap_or(Value::Null),
                );
                let event = if error.is_some() {
                    "document.failed"
                } else {
                    "document.processed"
                };
                let mut new = Notification::new(&a, &job, event, counts, error);
                new.at = "AT".into();
                assert_eq!(
                    to_json(&new).to_string(),
                    old_notification(&a, &job, event, &result, error).to_string()
                );
            }
        }
    }
}
