//! Orchestration: argument parsing, `process_document`, and the per-stage functions that chain
//! through intermediates stored in PostgreSQL.
//!
//! One file per concern: `args` (parsing), `progress` (job meta and the run log), `stages`
//! (the stages and `process_document`), `chained` (the per-stage functions that store and load
//! intermediates).

mod args;
mod chained;
mod progress;
mod result;
mod stages;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::error::PipelineError;
use crate::record::RunRecord;
use crate::telemetry::{in_stage, stage};
use crate::{Function, JobInfo, PipelineConfig, ProgressSink, Stages};

use args::{parse_args, Args};
use progress::{Progress, RunLog};
use result::{to_json, JobResult, Millis, Notification, StageResult};

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

fn option_on(options: &Map<String, Value>, key: &str) -> bool {
    options.get(key).and_then(Value::as_bool).unwrap_or(true)
}

impl Inner {
    pub async fn call(
        &self,
        function: Function,
        job: &JobInfo,
        args: &[Value],
        kwargs: &Map<String, Value>,
        progress: &dyn ProgressSink,
    ) -> Result<Value, PipelineError> {
        let name = function.name();
        let mut a = parse_args(args, kwargs)?;
        a.defaults = self.app_options.get(a.app.as_str());
        if let Some(d) = &a.defaults {
            d.fill(&mut a.options);
        }
        let progress = Progress::new(progress, name, &a.doc);
        let mut log = RunLog::new();
        let result = match function {
            Function::ProcessDocument => self.process_document(&a, &progress, &mut log).await,
            Function::Fetch => self.stage_fetch(&a, &progress, &mut log).await,
            Function::Extract => self.stage_extract(&a, &progress, &mut log).await,
            Function::Chunk => self.stage_chunk(&a, &progress, &mut log).await,
            Function::Embed => self.stage_embed(&a, &progress, &mut log).await,
            Function::Index => self.stage_index(&a, &progress, &mut log).await,
            Function::Analyze => self.stage_analyze(&a, &progress, &mut log).await,
            Function::Record => self.stage_record(&a, &progress, &mut log).await,
            Function::Notify => self.stage_notify(&a, &progress, &mut log, job).await,
        };
        let whole = function == Function::ProcessDocument;
        match result {
            Ok(result) => {
                let mut out = JobResult {
                    result,
                    notified: None,
                    run_id: log.run_id.to_string(),
                    timings_ms: log.timings.clone(),
                };
                if let Some(records) = &self.stages.records {
                    progress.stage("record");
                    let started = Instant::now();
                    let recorded = to_json(&out);
                    let run = self.run_record(job, name, &a, &mut log, Ok(recorded));
                    in_stage(stage("record", &a.doc), records.record(&a.app, &run)).await?;
                    let ms = started.elapsed().as_millis() as u64;
                    log.timings.insert("record", Millis::Whole(ms));
                    out.timings_ms = log.timings.clone();
                } else if !whole {
                    return Err(PipelineError::NotConfigured {
                        what: "PostgreSQL (chained stages store their output there)",
                        var: "MINDORA_DATABASE_URL",
                    });
                }
                if whole && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        progress.stage("notify");
                        let counts = match &out.result {
                            StageResult::Processed(p) => (json!(p.pages), json!(p.chunks)),
                            _ => (Value::Null, Value::Null),
                        };
                        let msg = Notification::new(&a, job, "document.processed", counts, None);
                        let span = stage("notify", &a.doc);
                        span.record("mindora.notify.event", "document.processed");
                        let sent = in_stage(span, notifier.notify(&a.app, &to_json(&msg))).await?;
                        out.notified = Some(sent);
                    }
                }
                progress.set(&[("stage", json!("done")), ("status", json!("done"))]);
                Ok(to_json(&out))
            }
            Err(e) => {
                tracing::warn!(function = name, app = a.app.as_str(), key = %a.doc.key, error = %e, "pipeline failed");
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
                        name,
                        &a,
                        &mut log,
                        Err((e.kind().into(), e.to_string())),
                    );
                    let recorded = in_stage(stage("record", &a.doc), records.record(&a.app, &run));
                    if let Err(re) = recorded.await {
                        tracing::warn!(error = %re, "could not record the failure");
                    }
                }
                if whole && option_on(&a.options, "notify") {
                    if let Some(notifier) = &self.stages.notifier {
                        let counts = (Value::Null, Value::Null);
                        let msg = Notification::new(&a, job, "document.failed", counts, Some(&e));
                        let span = stage("notify", &a.doc);
                        span.record("mindora.notify.event", "document.failed");
                        let msg = to_json(&msg);
                        let sent = in_stage(span, notifier.notify(&a.app, &msg));
                        if let Err(ne) = sent.await {
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
            timings: match to_json(&log.timings) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
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
