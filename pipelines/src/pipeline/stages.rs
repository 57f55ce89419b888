//! The stages (fetch, extract, chunk, embed, index, analyze) and `process_document`, which runs
//! them in one job.

use std::time::Instant;

use serde_json::{json, Value};
use tracing::Span;

use super::args::Args;
use super::progress::{Progress, RunLog};
use super::result::{DocFields, ExtractNotes, Indexed, Processed, StageResult};
use super::{need, option_on, Inner};
use crate::error::PipelineError;
use crate::model::{Analysis, Chunk, ChunkMeta, ExtractedText, FetchedObject};
use crate::telemetry::{in_stage, stage};

impl Inner {
    pub(super) async fn fetch(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<FetchedObject, PipelineError> {
        let source = need(
            &self.stages.source,
            "S3",
            "MINDORA_S3_ACCESS_KEY and MINDORA_S3_SECRET_KEY (and MINDORA_S3_ENDPOINT for MinIO)",
        )?;
        progress.stage("fetch");
        let t = Instant::now();
        let obj = source
            .fetch(&a.doc.bucket, &a.doc.key, self.max_bytes())
            .await?;
        log.fields.sha256 = Some(obj.sha256.clone());
        log.fields.size_bytes = Some(obj.bytes.len() as i64);
        let span = Span::current();
        span.record("mindora.document.bytes", obj.bytes.len() as u64);
        if let Some(mime) = &obj.content_type {
            span.record("mindora.document.mime", mime.as_str());
        }
        log.done(
            "fetch",
            "fetched",
            t,
            json!({"size_bytes": obj.bytes.len(), "sha256": obj.sha256}),
        );
        progress.set(&[("size_bytes", json!(obj.bytes.len()))]);
        Ok(obj)
    }

    pub(super) async fn extract(
        &self,
        a: &Args,
        obj: FetchedObject,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<ExtractedText, PipelineError> {
        progress.stage("extract");
        let t = Instant::now();
        let extractor = self.stages.extractor.clone();
        let file = a.doc.file_name().to_string();
        let name = file.clone();
        let options = crate::extract::ExtractOptions {
            password: a
                .options
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_string),
            time_limit: std::time::Duration::from_secs(self.config.extract_timeout_secs),
            ocr: self.config.ocr_options(a.options.get("ocr")),
        };
        let text = tokio::task::spawn_blocking(move || {
            extractor.extract_with(&name, &obj.bytes, &options)
        })
        .await
        .map_err(|e| PipelineError::Extract {
            file: file.clone(),
            problem: crate::ExtractProblem::Corrupt {
                format: "document",
                detail: format!("extractor crashed: {e}"),
            },
        })?
        .map_err(|problem| PipelineError::Extract { file, problem })?;
        log.fields.kind = Some((text.kind.clone(), text.mime.clone()));
        log.fields.pages = Some(text.pages as i32);
        let span = Span::current();
        span.record("mindora.document.format", text.kind.as_str());
        span.record("mindora.document.mime", text.mime.as_str());
        span.record("mindora.document.pages", text.pages);
        log.done(
            "extract",
            "extracted",
            t,
            json!({"kind": text.kind, "pages": text.pages, "chars": text.text.chars().count(),
                   "pages_with_text": text.pages_with_text, "pages_ocr": text.pages_ocr,
                   "ocr_confidence": text.ocr_confidence, "warnings": text.warnings}),
        );
        let mut meta = vec![("pages", json!(text.pages)), ("kind", json!(text.kind))];
        if let Some(p) = &text.pages_with_text {
            meta.push(("pages_with_text", json!(p)));
        }
        if let Some(p) = &text.pages_ocr {
            meta.push(("pages_ocr", json!(p)));
            meta.push(("ocr_confidence", json!(text.ocr_confidence)));
        }
        if !text.warnings.is_empty() {
            meta.push(("warnings", json!(text.warnings)));
        }
        progress.set(&meta);
        Ok(text)
    }

    pub(super) fn chunk(
        &self,
        a: &Args,
        text: &str,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Vec<Chunk> {
        progress.stage("chunk");
        let t = Instant::now();
        let custom = a
            .defaults
            .as_ref()
            .filter(|d| d.chunk_size.is_some() || d.chunk_overlap.is_some());
        let chunks = match custom {
            // The app's own chunk budget replaces the worker-wide chunker for this job.
            Some(d) => crate::chunk::Chunker::chunk(
                &crate::chunk::TextChunker::new(
                    d.chunk_size.unwrap_or(self.config.chunk_size),
                    d.chunk_overlap.unwrap_or(self.config.chunk_overlap),
                ),
                a.doc.document_id,
                text,
            ),
            None => self.stages.chunker.chunk(a.doc.document_id, text),
        };
        log.fields.chunks = Some(chunks.len() as i32);
        Span::current().record("mindora.chunks.count", chunks.len() as u64);
        log.done("chunk", "chunked", t, json!({"chunks": chunks.len()}));
        progress.set(&[("chunks", json!(chunks.len()))]);
        chunks
    }

    pub(super) async fn embed(
        &self,
        chunks: &[Chunk],
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Vec<Vec<f32>>, PipelineError> {
        let embedder = need(
            &self.stages.embedder,
            "embeddings",
            "MINDORA_EMBED_BASE_URL",
        )?;
        progress.set(&[("stage", json!("embed")), ("embedded", json!(0))]);
        let t = Instant::now();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let report = |n: usize| progress.set(&[("embedded", json!(n))]);
        let vectors = embedder.embed(&texts, &report).await?;
        let span = Span::current();
        span.record("mindora.chunks.count", chunks.len() as u64);
        span.record("mindora.vectors.count", vectors.len() as u64);
        span.record("mindora.vectors.dimensions", embedder.dimensions() as u64);
        log.done(
            "embed",
            "embedded",
            t,
            json!({"vectors": vectors.len(), "dimensions": embedder.dimensions()}),
        );
        Ok(vectors)
    }

    pub(super) async fn index(
        &self,
        a: &Args,
        meta: &ChunkMeta,
        chunks: &[Chunk],
        vectors: Option<&[Vec<f32>]>,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Indexed, PipelineError> {
        let mut out = Indexed::default();
        let t = Instant::now();
        Span::current().record("mindora.chunks.count", chunks.len() as u64);
        if option_on(&a.options, "index_fulltext") {
            if let Some(ft) = &self.stages.fulltext {
                progress.stage("index_fulltext");
                let report = ft.index(&a.app, meta, chunks).await?;
                Span::current().record("mindora.index.fulltext", report.target.as_str());
                out.fulltext = Some(report);
            }
        }
        if option_on(&a.options, "index_vectors") {
            if let Some(vx) = &self.stages.vectors {
                let Some(vectors) = vectors else {
                    return Err(PipelineError::NotConfigured {
                        what: "embeddings (needed by the Qdrant index)",
                        var: "MINDORA_EMBED_BASE_URL",
                    });
                };
                progress.stage("index_vectors");
                let report = vx.index(&a.app, meta, chunks, vectors).await?;
                let span = Span::current();
                span.record("mindora.index.vectors", report.target.as_str());
                span.record("mindora.vectors.count", vectors.len() as u64);
                out.vectors = Some(report);
            }
        }
        if out.any() {
            log.done("index", "indexed", t, &out);
        }
        Ok(out)
    }

    pub(super) async fn analyze(
        &self,
        a: &Args,
        text: &str,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Option<Analysis>, PipelineError> {
        let Some(analyzer) = &self.stages.analyzer else {
            return Ok(None);
        };
        if !option_on(&a.options, "analyze") {
            return Ok(None);
        }
        progress.stage("analyze");
        let t = Instant::now();
        let analysis = analyzer.analyze(a.doc.file_name(), text).await?;
        log.done(
            "analyze",
            "analyzed",
            t,
            json!({"keywords": analysis.keywords.len()}),
        );
        log.fields.analysis = Some(analysis.clone());
        Ok(Some(analysis))
    }

    /// [`Inner::analyze`] inside an `analyze` stage span, opened only when the stage runs.
    pub(super) async fn analyze_staged(
        &self,
        a: &Args,
        text: &str,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<Option<Analysis>, PipelineError> {
        if self.stages.analyzer.is_none() || !option_on(&a.options, "analyze") {
            return Ok(None);
        }
        in_stage(
            stage("analyze", &a.doc),
            self.analyze(a, text, progress, log),
        )
        .await
    }

    pub(super) fn meta(&self, a: &Args, text: &ExtractedText, log: &RunLog) -> ChunkMeta {
        ChunkMeta {
            document: a.doc.clone(),
            kind: text.kind.clone(),
            pages: text.pages,
            run_id: log.run_id,
            metadata: a
                .options
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({})),
        }
    }

    pub(super) async fn process_document(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        log.fields.metadata = a.options.get("metadata").cloned();
        let obj = in_stage(stage("fetch", &a.doc), self.fetch(a, progress, log)).await?;
        let (sha, size) = (obj.sha256.clone(), obj.bytes.len());
        let text = in_stage(
            stage("extract", &a.doc),
            self.extract(a, obj, progress, log),
        )
        .await?;
        let chunks = stage("chunk", &a.doc).in_scope(|| self.chunk(a, &text.text, progress, log));
        let wants_vectors = self.stages.vectors.is_some() && option_on(&a.options, "index_vectors");
        let vectors = if wants_vectors
            || (self.stages.embedder.is_some() && self.stages.fulltext.is_none())
        {
            Some(in_stage(stage("embed", &a.doc), self.embed(&chunks, progress, log)).await?)
        } else {
            None
        };
        let meta = self.meta(a, &text, log);
        let indexed = in_stage(
            stage("index", &a.doc),
            self.index(a, &meta, &chunks, vectors.as_deref(), progress, log),
        )
        .await?;
        let analysis = self.analyze_staged(a, &text.text, progress, log).await?;
        log.transitions.push(("done".into(), json!({})));
        Ok(StageResult::Processed(Processed {
            doc: DocFields::of(a),
            analysis,
            characters: text.text.chars().count(),
            chunks: chunks.len(),
            indexed,
            kind: text.kind.clone(),
            notes: ExtractNotes::of(&text),
            pages: text.pages,
            sha256: sha,
            size_bytes: size,
            status: "done",
        }))
    }
}
