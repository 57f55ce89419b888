//! The stages (fetch, extract, chunk, embed, index, analyze) as the chained stage jobs run them
//! (whole document); `process_document` streams them instead (see `stream`).

use std::time::Instant;

use serde_json::{json, Value};
use tracing::Span;

use super::args::Args;
use super::progress::{Progress, RunLog};
use super::result::Indexed;
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
        log.fields.size_bytes = Some(obj.size as i64);
        let span = Span::current();
        span.record("mindora.document.bytes", obj.size);
        if let Some(mime) = &obj.content_type {
            span.record("mindora.document.mime", mime.as_str());
        }
        log.done(
            "fetch",
            "fetched",
            t,
            json!({"size_bytes": obj.size, "sha256": obj.sha256}),
        );
        progress.set(&[("size_bytes", json!(obj.size))]);
        Ok(obj)
    }

    /// The extraction settings of a job.
    pub(super) fn extract_options(&self, a: &Args) -> crate::extract::ExtractOptions {
        crate::extract::ExtractOptions {
            password: a
                .options
                .get("password")
                .and_then(Value::as_str)
                .map(str::to_string),
            time_limit: std::time::Duration::from_secs(self.config.extract_timeout_secs),
            ocr: self.config.ocr_options(a.options.get("ocr")),
        }
    }

    /// Refuses a non-PDF object over `MINDORA_MAX_PARSED_BYTES`: those formats are parsed whole
    /// in memory, so their size, unlike a PDF's, still decides the job's memory.
    pub(super) fn check_parsed_size(
        &self,
        a: &Args,
        obj: &FetchedObject,
    ) -> Result<(), PipelineError> {
        let limit = self.config.max_parsed_bytes;
        if obj.size <= limit {
            return Ok(());
        }
        let file = a.doc.file_name().to_string();
        let problem = |p| PipelineError::Extract {
            file: file.clone(),
            problem: p,
        };
        if crate::extract::pdf::is_pdf_file(obj.path()).map_err(problem)? {
            return Ok(());
        }
        Err(problem(crate::ExtractProblem::Unsupported(format!(
            "a {} byte document that is not a PDF: such formats are parsed whole in memory, and \
             this worker parses at most {limit} bytes of them (MINDORA_MAX_PARSED_BYTES)",
            obj.size
        ))))
    }

    /// The whole document's text as Markdown (chained `pipelines.extract`, which stores it).
    pub(super) async fn extract(
        &self,
        a: &Args,
        obj: FetchedObject,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<ExtractedText, PipelineError> {
        progress.stage("extract");
        self.check_parsed_size(a, &obj)?;
        let t = Instant::now();
        let extractor = self.stages.extractor.clone();
        let file = a.doc.file_name().to_string();
        let name = file.clone();
        let options = self.extract_options(a);
        let text = tokio::task::spawn_blocking(move || {
            let mut markdown = String::new();
            let mut sink = |page: crate::document::Page| {
                let text = crate::document::to_markdown(&page.blocks);
                if !text.is_empty() {
                    if !markdown.is_empty() {
                        markdown.push_str("\n\n");
                    }
                    markdown.push_str(&text);
                }
                Ok(())
            };
            let mut out = extractor.extract_file(&name, obj.path(), &options, &mut sink)?;
            out.text = markdown;
            Ok(out)
        })
        .await
        .map_err(|e| crashed(&file, e))?
        .map_err(|problem| PipelineError::Extract { file, problem })?;
        let chars = text.text.chars().count();
        self.extracted(&text, chars, t.elapsed(), progress, log);
        Ok(text)
    }

    /// Logs and reports what extraction found (both paths).
    pub(super) fn extracted(
        &self,
        text: &ExtractedText,
        chars: usize,
        took: std::time::Duration,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) {
        log.fields.kind = Some((text.kind.clone(), text.mime.clone()));
        log.fields.pages = Some(text.pages as i32);
        let span = Span::current();
        span.record("mindora.document.format", text.kind.as_str());
        span.record("mindora.document.mime", text.mime.as_str());
        span.record("mindora.document.pages", text.pages);
        log.done_after(
            "extract",
            "extracted",
            took,
            json!({"kind": text.kind, "pages": text.pages, "chars": chars,
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
        let chunks = match self.app_chunker(a) {
            Some(c) => crate::chunk::Chunker::chunk(&c, a.doc.document_id, text),
            None => self.stages.chunker.chunk(a.doc.document_id, text),
        };
        log.fields.chunks = Some(chunks.len() as i32);
        Span::current().record("mindora.chunks.count", chunks.len() as u64);
        log.done("chunk", "chunked", t, json!({"chunks": chunks.len()}));
        progress.set(&[("chunks", json!(chunks.len()))]);
        chunks
    }

    /// The app's own chunk budget, which replaces the worker-wide chunker for its jobs.
    pub(super) fn app_chunker(&self, a: &Args) -> Option<crate::chunk::TextChunker> {
        let d = a
            .defaults
            .as_ref()
            .filter(|d| d.chunk_size.is_some() || d.chunk_overlap.is_some())?;
        Some(crate::chunk::TextChunker::new(
            d.chunk_size.unwrap_or(self.config.chunk_size),
            d.chunk_overlap.unwrap_or(self.config.chunk_overlap),
        ))
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
}

/// The extraction thread panicked or was cancelled.
pub(super) fn crashed(file: &str, e: tokio::task::JoinError) -> PipelineError {
    PipelineError::Extract {
        file: file.to_string(),
        problem: crate::ExtractProblem::Corrupt {
            format: "document",
            detail: format!("extractor crashed: {e}"),
        },
    }
}
