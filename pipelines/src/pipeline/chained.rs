//! The per-stage functions for chained jobs: each loads its input from PostgreSQL (the
//! previous stage's output) and stores its own.

use std::sync::Arc;

use serde_json::{json, Value};
use tracing::Span;

use super::args::Args;
use super::progress::{Progress, RunLog};
use super::result::{to_json, DocFields, ExtractNotes, Notification, StageResult};
use super::{need, option_on, Inner};
use crate::error::PipelineError;
use crate::model::{Chunk, ExtractedText};
use crate::record::RecordStore;
use crate::telemetry::{in_stage, stage};
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
    ) -> Result<StageResult, PipelineError> {
        let obj = in_stage(stage("fetch", &a.doc), self.fetch(a, progress, log)).await?;
        Ok(StageResult::Fetched {
            doc: DocFields::of(a),
            size_bytes: obj.size as usize,
            sha256: obj.sha256,
            content_type: obj.content_type,
        })
    }

    pub(super) async fn stage_extract(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        let obj = in_stage(stage("fetch", &a.doc), self.fetch(a, progress, log)).await?;
        let text = in_stage(
            stage("extract", &a.doc),
            self.extract(a, obj, progress, log),
        )
        .await?;
        let result = StageResult::Extracted {
            doc: DocFields::of(a),
            characters: text.text.chars().count(),
            kind: text.kind.clone(),
            notes: ExtractNotes::of(&text),
            pages: text.pages,
        };
        log.text = Some(text);
        Ok(result)
    }

    pub(super) async fn stage_chunk(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        // The stage span covers loading its input from PostgreSQL.
        let chunks = in_stage(stage("chunk", &a.doc), async {
            let text = self.stored_text(a).await?;
            Ok(self.chunk(a, &text.text, progress, log))
        })
        .await?;
        let result = StageResult::Chunked {
            doc: DocFields::of(a),
            chunks: chunks.len(),
        };
        log.chunks = Some(chunks);
        Ok(result)
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
    ) -> Result<StageResult, PipelineError> {
        let (chunks, vectors) = in_stage(stage("embed", &a.doc), async {
            let stored = self.stored_chunks(a).await?;
            let chunks: Vec<Chunk> = stored.into_iter().map(|(c, _)| c).collect();
            let vectors = self.embed(&chunks, progress, log).await?;
            Ok((chunks, vectors))
        })
        .await?;
        let result = StageResult::Embedded {
            doc: DocFields::of(a),
            chunks: chunks.len(),
            dimensions: vectors.first().map_or(0, Vec::len),
        };
        log.vectors = Some(vectors);
        Ok(result)
    }

    pub(super) async fn stage_index(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        let (chunks, indexed) = in_stage(stage("index", &a.doc), async {
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
            Ok((chunks, indexed))
        })
        .await?;
        Ok(StageResult::IndexedChunks {
            doc: DocFields::of(a),
            chunks: chunks.len(),
            indexed,
        })
    }

    pub(super) async fn stage_analyze(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        need(
            &self.stages.analyzer,
            "the analyze stage",
            "MINDORA_CHAT_MODEL",
        )?;
        let analysis = in_stage(stage("analyze", &a.doc), async {
            let text = self.stored_text(a).await?;
            self.analyze(a, &text.text, progress, log).await
        })
        .await?;
        Ok(StageResult::Analyzed {
            doc: DocFields::of(a),
            analysis,
        })
    }

    pub(super) async fn stage_record(
        &self,
        a: &Args,
        _progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        self.records()?;
        log.fields.metadata = a.options.get("metadata").cloned();
        log.transitions.push(("done".into(), json!({})));
        Ok(StageResult::Recorded {
            doc: DocFields::of(a),
            status: "done",
        })
    }

    pub(super) async fn stage_notify(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        _log: &mut RunLog,
        job: &JobInfo,
    ) -> Result<StageResult, PipelineError> {
        let notifier = need(
            &self.stages.notifier,
            "notifications",
            "MINDORA_AMQP_URL or MINDORA_NOTIFY_REDIS_URL",
        )?;
        let report = in_stage(stage("notify", &a.doc), async {
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
            let field = |k: &str| doc.as_ref().map_or(Value::Null, |d| d[k].clone());
            let mut msg = Notification::new(a, job, event, (field("pages"), field("chunks")), None);
            if doc.is_some() {
                msg.status = status;
                msg.error = field("error");
            }
            Span::current().record("mindora.notify.event", event);
            notifier.notify(&a.app, &to_json(&msg)).await
        })
        .await?;
        Ok(StageResult::Notified {
            doc: DocFields::of(a),
            notified: report,
        })
    }
}
