//! Byte compatibility of the result types. The expected strings are results captured from the
//! map-building code these structs replaced (the `pipeline` integration tests, before the
//! change), byte for byte.

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
        let a = crate::pipeline::args::parse_args(&[], &kw).unwrap();
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
