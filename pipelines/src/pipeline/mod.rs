//! Orchestration: argument parsing, `process_document`, and the per-stage functions that chain
//! through intermediates stored in PostgreSQL.
//!
//! One file per concern: `args` (parsing), `progress` (job meta and the run log), `stages`
//! (the stages and `process_document`), `chained` (the per-stage functions that store and load
//! intermediates).

mod args;
mod chained;
mod progress;
mod stages;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::error::PipelineError;
use crate::model::ExtractedText;
use crate::record::RunRecord;
use crate::{JobInfo, PipelineConfig, ProgressSink, Stages};

use args::{parse_args, Args};
use progress::{Progress, RunLog};

pub(crate) struct Inner {
    pub config: PipelineConfig,
    pub stages: Stages,
    pub app_options: crate::app_options::AppOptionsTable,
}

fn need<'a, T: ?Sized>(
    stage: &'a Option<Arc<T>>,
    what: &'static str,
    var: &'static str,
) -> Result<&'a Arc<T>, PipelineError> {
    stage
        .as_ref()
        .ok_or(PipelineError::NotConfigured { what, var })
}

/// Adds what extraction wants the caller to know: which PDF pages had text, and warnings
/// (damaged file repaired, pages that are images only).
fn extract_notes(m: &mut Map<String, Value>, text: &ExtractedText) {
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

fn option_on(options: &Map<String, Value>, key: &str) -> bool {
    options.get(key).and_then(Value::as_bool).unwrap_or(true)
}

impl Inner {
    pub async fn call(
        &self,
        function: &str,
        job: &JobInfo,
        args: &[Value],
        kwargs: &Map<String, Value>,
        progress: &dyn ProgressSink,
    ) -> Result<Value, PipelineError> {
        let name = function.strip_prefix("pipelines.").unwrap_or(function);
        if !crate::FUNCTIONS.contains(&format!("pipelines.{name}").as_str()) {
            return Err(PipelineError::UnknownFunction(function.to_string()));
        }
        let mut a = parse_args(args, kwargs)?;
        a.defaults = self.app_options.get(a.app.as_str());
        if let Some(d) = &a.defaults {
            d.fill(&mut a.options);
        }
        let progress = Progress::new(progress, function, &a.doc);
        let mut log = RunLog::new();
        let result = match name {
            "process_document" => self.process_document(&a, &progress, &mut log).await,
            "fetch" => self.stage_fetch(&a, &progress, &mut log).await,
            "extract" => self.stage_extract(&a, &progress, &mut log).await,
            "chunk" => self.stage_chunk(&a, &progress, &mut log).await,
            "embed" => self.stage_embed(&a, &progress, &mut log).await,
            "index" => self.stage_index(&a, &progress, &mut log).await,
            "analyze" => self.stage_analyze(&a, &progress, &mut log).await,
            "record" => self.stage_record(&a, &progress, &mut log).await,
            _ => self.stage_notify(&a, &progress, &mut log, job).await,
        };
        match result {
            Ok(mut value) => {
                if let Value::Object(m) = &mut value {
                    m.insert("run_id".into(), json!(log.run_id.to_string()));
                    m.insert("timings_ms".into(), Value::Object(log.timings.clone()));
                }
                if let Some(records) = &self.stages.records {
                    progress.stage("record");
                    let started = Instant::now();
                    records
                        .record(
                            &a.app,
                            &self.run_record(job, function, &a, &mut log, Ok(value.clone())),
                        )
                        .await?;
                    log.timings
                        .insert("record".into(), json!(started.elapsed().as_millis() as u64));
                    if let Value::Object(m) = &mut value {
                        m.insert("timings_ms".into(), Value::Object(log.timings.clone()));
                    }
                } else if name != "process_document" {
                    return Err(PipelineError::NotConfigured {
                        what: "PostgreSQL (chained stages store their output there)",
                        var: "MINDORA_DATABASE_URL",
                    });
                }
                if name == "process_document" && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        progress.stage("notify");
                        let msg = notification(&a, job, "document.processed", &value, None);
                        let report = notifier.notify(&a.app, &msg).await?;
                        if let Value::Object(m) = &mut value {
                            m.insert("notified".into(), json!(report));
                        }
                    }
                }
                progress.set(&[("stage", json!("done")), ("status", json!("done"))]);
                Ok(value)
            }
            Err(e) => {
                tracing::warn!(function, app = a.app.as_str(), key = %a.doc.key, error = %e, "pipeline failed");
                log.transitions.push((
                    "failed".into(),
                    json!({"error": e.to_string(), "kind": e.kind(), "retryable": e.is_retryable()}),
                ));
                if matches!(
                    e,
                    PipelineError::Service {
                        service: "PostgreSQL",
                        ..
                    }
                ) {
                    // Recording the failure would hit the same error.
                } else if let Some(records) = &self.stages.records {
                    let run = self.run_record(
                        job,
                        function,
                        &a,
                        &mut log,
                        Err((e.kind().into(), e.to_string())),
                    );
                    if let Err(re) = records.record(&a.app, &run).await {
                        tracing::warn!(error = %re, "could not record the failure");
                    }
                }
                if name == "process_document" && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        let msg = notification(&a, job, "document.failed", &Value::Null, Some(&e));
                        if let Err(ne) = notifier.notify(&a.app, &msg).await {
                            tracing::warn!(error = %ne, "could not send the failure notification");
                        }
                    }
                }
                progress.set(&[
                    ("stage", json!("failed")),
                    ("status", json!("failed")),
                    ("error", json!(e.to_string())),
                ]);
                Err(e)
            }
        }
    }

    fn run_record(
        &self,
        job: &JobInfo,
        function: &str,
        a: &Args,
        log: &mut RunLog,
        outcome: Result<Value, (String, String)>,
    ) -> RunRecord {
        RunRecord {
            run_id: log.run_id,
            job: job.clone(),
            function: function.to_string(),
            document: a.doc.clone(),
            started_at: log.started_at,
            transitions: std::mem::take(&mut log.transitions),
            timings: log.timings.clone(),
            outcome,
            fields: std::mem::take(&mut log.fields),
            text: log.text.take(),
            chunks: log.chunks.take(),
            embeddings: log.vectors.take(),
        }
    }

    pub(super) fn max_bytes(&self) -> u64 {
        self.config.max_object_bytes
    }
}

/// The notification message (a JSON object) sent on RabbitMQ and Redis.
fn notification(
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
        "at": Utc::now().to_rfc3339(),
    })
}
