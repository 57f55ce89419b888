//! The per-stage functions for chained jobs: each loads its input from PostgreSQL (the
//! previous stage's output) and stores its own.

use std::sync::Arc;

use serde_json::{json, Value};

use super::args::Args;
use super::progress::{Progress, RunLog};
use super::{extract_notes, need, notification, option_on, Inner};
use crate::error::PipelineError;
use crate::model::{Chunk, ExtractedText};
use crate::record::RecordStore;
use crate::JobInfo;

impl Inner {
    pub(super) fn records(&self) -> Result<&Arc<dyn RecordStore>, PipelineError> {
        need(
            &self.stages.records,
            "PostgreSQL (chained stages store their output there)",
            "MINDORA_DATABASE_URL",
        )
    }

    pub(super) async fn stored_text(&self, a: &Args) -> Result<ExtractedText, PipelineError> {
        self.records()?
            .load_text(&a.app, a.doc.document_id)
            .await?
            .ok_or_else(|| PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "extracted text",
                stage: "pipelines.extract",
            })
    }

    pub(super) async fn stage_fetch(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let obj = self.fetch(a, progress, log).await?;
        let mut m = self.base(a);
        m.insert("sha256".into(), json!(obj.sha256));
        m.insert("size_bytes".into(), json!(obj.bytes.len()));
        m.insert("content_type".into(), json!(obj.content_type));
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_extract(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let obj = self.fetch(a, progress, log).await?;
        let text = self.extract(a, obj, progress, log).await?;
        let mut m = self.base(a);
        m.insert("kind".into(), json!(text.kind));
        m.insert("pages".into(), json!(text.pages));
        m.insert("characters".into(), json!(text.text.chars().count()));
        extract_notes(&mut m, &text);
        log.text = Some(text);
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_chunk(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let text = self.stored_text(a).await?;
        let chunks = self.chunk(a, &text.text, progress, log);
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        log.chunks = Some(chunks);
        Ok(Value::Object(m))
    }

    pub(super) async fn stored_chunks(
        &self,
        a: &Args,
    ) -> Result<Vec<(Chunk, Option<Vec<f32>>)>, PipelineError> {
        let chunks = self
            .records()?
            .load_chunks(&a.app, a.doc.document_id)
            .await?;
        if chunks.is_empty() {
            return Err(PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "chunks",
                stage: "pipelines.chunk",
            });
        }
        Ok(chunks)
    }

    pub(super) async fn stage_embed(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let stored = self.stored_chunks(a).await?;
        let chunks: Vec<Chunk> = stored.into_iter().map(|(c, _)| c).collect();
        let vectors = self.embed(&chunks, progress, log).await?;
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        m.insert(
            "dimensions".into(),
            json!(vectors.first().map_or(0, Vec::len)),
        );
        log.vectors = Some(vectors);
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_index(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        let text = self.stored_text(a).await?;
        let stored = self.stored_chunks(a).await?;
        let has_all = stored.iter().all(|(_, v)| v.is_some());
        let chunks: Vec<Chunk> = stored.iter().map(|(c, _)| c.clone()).collect();
        let vectors: Option<Vec<Vec<f32>>> = if has_all {
            Some(stored.into_iter().filter_map(|(_, v)| v).collect())
        } else if self.stages.vectors.is_some() && option_on(&a.options, "index_vectors") {
            return Err(PipelineError::MissingInput {
                document_id: a.doc.document_id.to_string(),
                what: "embeddings",
                stage: "pipelines.embed",
            });
        } else {
            None
        };
        let meta = self.meta(a, &text, log);
        log.fields.chunks = Some(chunks.len() as i32);
        let indexed = self
            .index(a, &meta, &chunks, vectors.as_deref(), progress, log)
            .await?;
        let mut m = self.base(a);
        m.insert("chunks".into(), json!(chunks.len()));
        m.insert("indexed".into(), indexed);
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_analyze(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        need(
            &self.stages.analyzer,
            "the analyze stage",
            "MINDORA_CHAT_MODEL",
        )?;
        let text = self.stored_text(a).await?;
        let analysis = self.analyze(a, &text.text, progress, log).await?;
        let mut m = self.base(a);
        m.insert("analysis".into(), analysis.unwrap_or(Value::Null));
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_record(
        &self,
        a: &Args,
        _progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Value, PipelineError> {
        self.records()?;
        log.fields.metadata = a.options.get("metadata").cloned();
        log.transitions.push(("done".into(), json!({})));
        let mut m = self.base(a);
        m.insert("status".into(), json!("done"));
        Ok(Value::Object(m))
    }

    pub(super) async fn stage_notify(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        _log: &mut RunLog,
        job: &JobInfo,
    ) -> Result<Value, PipelineError> {
        let notifier = need(
            &self.stages.notifier,
            "notifications",
            "MINDORA_AMQP_URL or MINDORA_NOTIFY_REDIS_URL",
        )?;
        progress.stage("notify");
        let doc = match &self.stages.records {
            Some(r) => r.load_document(&a.app, a.doc.document_id).await?,
            None => None,
        };
        let status = doc
            .as_ref()
            .and_then(|d| d["status"].as_str())
            .unwrap_or("done")
            .to_string();
        let event = if status == "failed" {
            "document.failed"
        } else {
            "document.processed"
        };
        let mut msg = notification(a, job, event, doc.as_ref().unwrap_or(&Value::Null), None);
        if let (Value::Object(m), Some(d)) = (&mut msg, &doc) {
            m.insert("status".into(), json!(status));
            m.insert("error".into(), d["error"].clone());
        }
        let report = notifier.notify(&a.app, &msg).await?;
        let mut m = self.base(a);
        m.insert("notified".into(), json!(report));
        Ok(Value::Object(m))
    }
}
