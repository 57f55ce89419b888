//! `process_document` as a stream: pages → chunks → embedding batches → index batches, so a
//! job holds one batch of chunks and vectors (plus the pages in flight), not the document.
//!
//! Extraction runs on a blocking thread and hands its pages through a small bounded channel;
//! the async side chunks them, and each time a batch of chunks is complete it embeds, indexes
//! (Elasticsearch bulk, Qdrant upsert) and stores (PostgreSQL rows) that batch, then drops it.
//! When the document ends, the chunks of earlier runs are removed everywhere. If anything fails
//! mid-stream the channel closes, the extraction thread's next page is refused
//! (`ExtractProblem::Stopped`) and the job fails with the first real error.
//!
//! Stage spans overlap here: `extract` covers the whole stream and `chunk`, `embed`, `index`
//! each cover their stage's batches (from the first to the last), with totals recorded at the end.

use std::time::{Duration, Instant};

use serde_json::json;
use std::sync::OnceLock;

use tracing::Span;

use super::args::Args;
use super::progress::{Progress, RunLog};
use super::result::{DocFields, ExtractNotes, Indexed, Processed, StageResult};
use super::stages::crashed;
use super::{option_on, Inner};
use crate::document::{to_markdown, Page};
use crate::error::{ExtractProblem, PipelineError};
use crate::index_fulltext::IndexReport;
use crate::model::{Chunk, ChunkMeta, ExtractedText, FetchedObject};
use crate::telemetry::{in_stage, stage};

/// Pages that may wait between the extraction thread and the pipeline.
const PAGE_QUEUE: usize = 2;
/// Characters of the document's beginning kept for the analyze stage (its model reads a
/// prefix anyway: `OpenAiAnalyzer::max_chars`).
const ANALYZE_PREFIX_CHARS: usize = 32_000;

/// What one document's stream adds up to.
#[derive(Default)]
struct Totals {
    chunks: usize,
    embedded: usize,
    characters: usize,
    /// Pages (or sheets) delivered so far.
    pages: u32,
    fulltext: Option<IndexReport>,
    vectors: Option<IndexReport>,
    chunk_time: Duration,
    embed_time: Duration,
    index_time: Duration,
}

/// The stage spans and settings one stream shares across its batches.
struct Run<'a> {
    a: &'a Args,
    meta: ChunkMeta,
    progress: &'a Progress<'a>,
    /// The job's span: the stage spans are its children, made when their stage first runs.
    parent: Span,
    spans: [OnceLock<Span>; 3],
    embed: bool,
    fulltext: bool,
    vectors: bool,
}

const CHUNK: usize = 0;
const EMBED: usize = 1;
const INDEX: usize = 2;
const NAMES: [&str; 3] = ["chunk", "embed", "index"];

impl Run<'_> {
    /// The span of stage `which`, opened (as a child of the job's span) on first use.
    fn span(&self, which: usize) -> Span {
        self.spans[which]
            .get_or_init(|| self.parent.in_scope(|| stage(NAMES[which], &self.a.doc)))
            .clone()
    }
}

impl Inner {
    pub(super) async fn process_document(
        &self,
        a: &Args,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<StageResult, PipelineError> {
        log.fields.metadata = a.options.get("metadata").cloned();
        let obj = in_stage(stage("fetch", &a.doc), self.fetch(a, progress, log)).await?;
        let parent = Span::current();
        let (text, totals, prefix) = in_stage(
            stage("extract", &a.doc),
            self.stream(a, &obj, parent, progress, log),
        )
        .await?;
        let analysis = self.analyze_staged(a, &prefix, progress, log).await?;
        log.transitions.push(("done".into(), json!({})));
        Ok(StageResult::Processed(Processed {
            doc: DocFields::of(a),
            analysis,
            characters: totals.characters,
            chunks: totals.chunks,
            indexed: Indexed {
                fulltext: totals.fulltext,
                vectors: totals.vectors,
            },
            kind: text.kind.clone(),
            notes: ExtractNotes::of(&text),
            pages: text.pages,
            sha256: obj.sha256.clone(),
            size_bytes: obj.size as usize,
            status: "done",
        }))
    }

    /// Extracts, chunks, embeds and indexes `obj` batch by batch; returns the extraction's
    /// summary, the totals and the text's beginning (for the analysis).
    async fn stream(
        &self,
        a: &Args,
        obj: &FetchedObject,
        parent: Span,
        progress: &Progress<'_>,
        log: &mut RunLog,
    ) -> Result<(ExtractedText, Totals, String), PipelineError> {
        self.check_parsed_size(a, obj)?;
        progress.stage("extract");
        let file = a.doc.file_name().to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(PAGE_QUEUE);
        let extractor = self.stages.extractor.clone();
        let (name, path, options) = (
            file.clone(),
            obj.path().to_path_buf(),
            self.extract_options(a),
        );
        let thread = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut sink = |page: Page| {
                tx.blocking_send(page)
                    .map_err(|_| ExtractProblem::Stopped("the pipeline stopped reading".into()))
            };
            let out = extractor.extract_file(&name, &path, &options, &mut sink);
            (out, t.elapsed())
        });

        let app_chunker = self.app_chunker(a);
        let mut chunks = match &app_chunker {
            Some(c) => crate::chunk::Chunker::stream(c, a.doc.document_id),
            None => self.stages.chunker.stream(a.doc.document_id),
        };
        let wants_vectors = self.stages.vectors.is_some() && option_on(&a.options, "index_vectors");
        let run = Run {
            a,
            // The page count is known only when extraction ends: batches written before carry
            // the pages read so far (the final count is in the document row).
            meta: self.meta(
                a,
                &ExtractedText {
                    kind: kind_of(&file, obj.path()),
                    ..ExtractedText::default()
                },
                log,
            ),
            progress,
            parent,
            spans: Default::default(),
            embed: wants_vectors
                || (self.stages.embedder.is_some() && self.stages.fulltext.is_none()),
            fulltext: self.stages.fulltext.is_some() && option_on(&a.options, "index_fulltext"),
            vectors: wants_vectors,
        };
        let mut totals = Totals::default();
        let mut prefix = String::new();
        let batch =
            (self.config.embed_batch_size.max(1) * self.config.embed_concurrency.max(1)).max(1);
        let mut pending: Vec<Chunk> = Vec::new();
        let mut chunking = false;
        let streamed: Result<(), PipelineError> = async {
            while let Some(page) = rx.recv().await {
                totals.pages = totals.pages.max(page.number.unwrap_or(1));
                let markdown = to_markdown(&page.blocks);
                if !markdown.is_empty() {
                    let separator = if totals.characters > 0 { 2 } else { 0 };
                    totals.characters += separator + markdown.chars().count();
                    let room = ANALYZE_PREFIX_CHARS.saturating_sub(prefix.chars().count());
                    if room > 0 {
                        if !prefix.is_empty() {
                            prefix.push_str("\n\n");
                        }
                        prefix.extend(markdown.chars().take(room));
                    }
                }
                drop(markdown);
                let t = Instant::now();
                run.span(CHUNK)
                    .in_scope(|| chunks.push(&page, &mut pending));
                totals.chunk_time += t.elapsed();
                if !chunking && !pending.is_empty() {
                    chunking = true;
                    progress.stage("chunk");
                }
                while pending.len() >= batch {
                    let rest = pending.split_off(batch);
                    let full = std::mem::replace(&mut pending, rest);
                    self.batch(&run, full, &mut totals).await?;
                }
            }
            Ok(())
        }
        .await;
        // Closing the channel stops the extraction at its next page; wait for the thread so
        // the temporary file outlives it.
        drop(rx);
        let (extracted, took) = thread.await.map_err(|e| crashed(&file, e))?;
        streamed?;
        let mut text = extracted.map_err(|problem| PipelineError::Extract { file, problem })?;
        let t = Instant::now();
        run.span(CHUNK).in_scope(|| chunks.finish(&mut pending));
        totals.chunk_time += t.elapsed();
        drop(chunks);
        if !chunking {
            progress.stage("chunk");
        }
        let run = Run {
            meta: self.meta(a, &text, log),
            ..run
        };
        for full in std::mem::take(&mut pending).chunks(batch) {
            self.batch(&run, full.to_vec(), &mut totals).await?;
        }
        self.finish_document(&run, &mut totals).await?;
        text.text = String::new();
        self.log_stream(&text, &totals, took, &run, log);
        Ok((text, totals, prefix))
    }

    /// Embeds, indexes and stores one batch of chunks, then drops it.
    async fn batch(
        &self,
        run: &Run<'_>,
        chunks: Vec<Chunk>,
        totals: &mut Totals,
    ) -> Result<(), PipelineError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let (a, progress) = (run.a, run.progress);
        let meta = ChunkMeta {
            pages: run.meta.pages.max(totals.pages),
            ..run.meta.clone()
        };
        let vectors = if run.embed {
            let t = Instant::now();
            let done = totals.embedded;
            if done == 0 {
                progress.set(&[("stage", json!("embed")), ("embedded", json!(0))]);
            }
            let vectors = in_stage(run.span(EMBED), async {
                let embedder = super::need(
                    &self.stages.embedder,
                    "embeddings",
                    "MINDORA_EMBED_BASE_URL",
                )?;
                let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
                let report = |n: usize| progress.set(&[("embedded", json!(done + n))]);
                embedder.embed(&texts, &report).await
            })
            .await?;
            totals.embed_time += t.elapsed();
            totals.embedded += vectors.len();
            Some(vectors)
        } else {
            None
        };
        let t = Instant::now();
        let first = totals.chunks == 0;
        in_stage(run.span(INDEX), async {
            if let (true, Some(ft)) = (run.fulltext, &self.stages.fulltext) {
                if first {
                    progress.stage("index_fulltext");
                }
                let r = ft.write(&a.app, &meta, &chunks).await?;
                let total = totals.fulltext.get_or_insert_with(IndexReport::default);
                total.indexed += r.indexed;
                total.target = r.target;
            }
            if let (true, Some(vx)) = (run.vectors, &self.stages.vectors) {
                let Some(vectors) = &vectors else {
                    return Err(PipelineError::NotConfigured {
                        what: "embeddings (needed by the Qdrant index)",
                        var: "MINDORA_EMBED_BASE_URL",
                    });
                };
                if first {
                    progress.stage("index_vectors");
                }
                let r = vx.write(&a.app, &meta, &chunks, vectors).await?;
                let total = totals.vectors.get_or_insert_with(IndexReport::default);
                total.indexed += r.indexed;
                total.target = r.target;
            }
            if let Some(records) = &self.stages.records {
                records
                    .write_chunks(&a.app, &a.doc, run.meta.run_id, &chunks)
                    .await?;
            }
            Ok(())
        })
        .await?;
        totals.index_time += t.elapsed();
        totals.chunks += chunks.len();
        progress.set(&[("chunks", json!(totals.chunks))]);
        Ok(())
    }

    /// Every chunk is written: remove the document's chunks of other runs everywhere.
    async fn finish_document(
        &self,
        run: &Run<'_>,
        totals: &mut Totals,
    ) -> Result<(), PipelineError> {
        let a = run.a;
        let t = Instant::now();
        in_stage(run.span(INDEX), async {
            if let (true, Some(ft)) = (run.fulltext, &self.stages.fulltext) {
                let removed = ft.remove_other_runs(&a.app, &run.meta).await?;
                let total = totals.fulltext.get_or_insert_with(IndexReport::default);
                total.removed = removed;
                if total.target.is_empty() {
                    total.target = a.app.es_index(chrono::Utc::now());
                }
                Span::current().record("mindora.index.fulltext", total.target.as_str());
            }
            if let (true, Some(vx)) = (run.vectors, &self.stages.vectors) {
                vx.remove_other_runs(&a.app, &run.meta).await?;
                let total = totals.vectors.get_or_insert_with(IndexReport::default);
                total.target = a.app.qdrant_collection();
                Span::current().record("mindora.index.vectors", total.target.as_str());
            }
            if let Some(records) = &self.stages.records {
                records
                    .remove_other_runs(&a.app, a.doc.document_id, run.meta.run_id)
                    .await?;
            }
            Ok(())
        })
        .await?;
        totals.index_time += t.elapsed();
        Ok(())
    }

    /// The run log's transitions and timings, and the stage spans' totals, once the stream ended.
    fn log_stream(
        &self,
        text: &ExtractedText,
        totals: &Totals,
        took: Duration,
        run: &Run<'_>,
        log: &mut RunLog,
    ) {
        let progress = run.progress;
        self.extracted(text, totals.characters, took, progress, log);
        log.fields.chunks = Some(totals.chunks as i32);
        run.span(CHUNK)
            .record("mindora.chunks.count", totals.chunks as u64);
        log.done_after(
            "chunk",
            "chunked",
            totals.chunk_time,
            json!({"chunks": totals.chunks}),
        );
        progress.set(&[("chunks", json!(totals.chunks))]);
        if run.embed {
            let dims = self.stages.embedder.as_ref().map_or(0, |e| e.dimensions());
            run.span(EMBED)
                .record("mindora.chunks.count", totals.chunks as u64);
            run.span(EMBED)
                .record("mindora.vectors.count", totals.embedded as u64);
            run.span(EMBED)
                .record("mindora.vectors.dimensions", dims as u64);
            log.done_after(
                "embed",
                "embedded",
                totals.embed_time,
                json!({"vectors": totals.embedded, "dimensions": dims}),
            );
            progress.set(&[("embedded", json!(totals.embedded))]);
        }
        run.span(INDEX)
            .record("mindora.chunks.count", totals.chunks as u64);
        let indexed = Indexed {
            fulltext: totals.fulltext.clone(),
            vectors: totals.vectors.clone(),
        };
        if indexed.any() {
            run.span(INDEX)
                .record("mindora.vectors.count", totals.embedded as u64);
            log.done_after("index", "indexed", totals.index_time, &indexed);
        }
    }
}

/// The document's kind before extraction (indexed with every chunk): PDFs by their header,
/// other formats (read whole anyway, and capped) by detection; "document" if detection fails,
/// in which case extraction reports why.
fn kind_of(name: &str, path: &std::path::Path) -> String {
    if crate::extract::pdf::is_pdf_file(path).unwrap_or(false) {
        return crate::extract::Kind::Pdf.name().to_string();
    }
    std::fs::read(path)
        .ok()
        .and_then(|bytes| crate::extract::detect(name, &bytes).ok())
        .map_or_else(|| "document".to_string(), |k| k.name().to_string())
}
