//! The job's live meta (stage, status) and the run's log of transitions and timings.

use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::result::{to_json, Millis, Timings};
use crate::model::{Chunk, DocumentRef, ExtractedText};
use crate::record::DocumentFields;
use crate::ProgressSink;

/// Accumulates the job's meta and pushes it to the sink at each change.
pub(super) struct Progress<'a> {
    pub(super) sink: &'a dyn ProgressSink,
    pub(super) meta: std::sync::Mutex<Map<String, Value>>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(sink: &'a dyn ProgressSink, function: &str, doc: &DocumentRef) -> Self {
        let mut meta = Map::new();
        meta.insert("pipeline".into(), json!(function));
        meta.insert("document_id".into(), json!(doc.document_id.to_string()));
        Progress {
            sink,
            meta: std::sync::Mutex::new(meta),
        }
    }

    pub(super) fn set(&self, pairs: &[(&str, Value)]) {
        let snapshot = match self.meta.lock() {
            Ok(mut m) => {
                for (k, v) in pairs {
                    m.insert((*k).to_string(), v.clone());
                }
                m.insert("updated_at".into(), json!(Utc::now().to_rfc3339()));
                m.clone()
            }
            Err(_) => return,
        };
        self.sink.report(snapshot);
    }

    pub(super) fn stage(&self, stage: &str) {
        self.set(&[("stage", json!(stage))]);
    }
}

/// Times stages and records status transitions as they happen.
pub(super) struct RunLog {
    pub(super) run_id: Uuid,
    pub(super) started_at: chrono::DateTime<Utc>,
    pub(super) transitions: Vec<(String, Value)>,
    pub(super) timings: Timings,
    pub(super) fields: DocumentFields,
    /// Intermediates for chained stages, written in the run's transaction.
    pub(super) text: Option<ExtractedText>,
    pub(super) chunks: Option<Vec<Chunk>>,
    pub(super) vectors: Option<Vec<Vec<f32>>>,
}

impl RunLog {
    pub(super) fn new() -> Self {
        RunLog {
            run_id: Uuid::new_v4(),
            started_at: Utc::now(),
            transitions: Vec::new(),
            timings: Timings::new(),
            fields: DocumentFields::default(),
            text: None,
            chunks: None,
            vectors: None,
        }
    }

    /// Times `stage` and logs the transition to `status` with `detail` (a JSON object) and the
    /// duration as `ms`.
    pub(super) fn done(
        &mut self,
        stage: &'static str,
        status: &str,
        started: Instant,
        detail: impl Serialize,
    ) {
        self.done_after(stage, status, started.elapsed(), detail);
    }

    /// [`RunLog::done`] with the stage's duration given (a streamed stage's summed batches).
    pub(super) fn done_after(
        &mut self,
        stage: &'static str,
        status: &str,
        took: std::time::Duration,
        detail: impl Serialize,
    ) {
        #[derive(Serialize)]
        struct Timed<T> {
            #[serde(flatten)]
            detail: T,
            ms: f64,
        }
        let ms = took.as_secs_f64() * 1000.0;
        let ms = (ms * 10.0).round() / 10.0;
        self.timings.insert(stage, Millis::Tenths(ms));
        self.transitions
            .push((status.to_string(), to_json(&Timed { detail, ms })));
    }
}
