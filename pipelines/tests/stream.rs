//! `process_document` streams (issue 24): a large document goes through in batches and comes
//! out with exactly the chunks of the whole-document path, in Elasticsearch, Qdrant and
//! PostgreSQL alike; a re-run replaces the previous run's chunks everywhere; a failure in the
//! middle stops the extraction and fails the job with the real error.

use mindora_tests::pipelines as common;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mindora_pipelines::chunk::{Chunker, TextChunker};
use mindora_pipelines::document::{paragraphs, to_markdown, Block, Page};
use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor, PageSink};
use mindora_pipelines::model::{chunk_id, ExtractedText};
use mindora_pipelines::{ExtractProblem, PipelineError, Pipelines, Stages};
use mindora_tests::pipelines::{env, fixtures};
use serde_json::json;
use uuid::Uuid;

/// Real-looking prose of about `mib` MiB: paragraphs of a few sentences.
fn prose(mib: usize) -> String {
    let mut out = String::new();
    let mut p = 0;
    while out.len() < mib << 20 {
        out.push_str(&fixtures::prose_page(p, 12).join(" "));
        out.push_str("\n\n");
        p += 1;
    }
    out
}

/// This process's resident set now, MiB (printed, not asserted: the stand-ins share it).
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |k| k / 1024)
}

async fn pg_chunks(schema: &str, doc: &str) -> Vec<(i32, Uuid, String)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT chunk_index, chunk_id, text FROM \"{schema}\".chunks WHERE document_id = $1::uuid ORDER BY chunk_index"
    )))
    .bind(doc)
    .fetch_all(&common::pg().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_document_streams_to_exactly_its_chunks() {
    let mut e = env(768).await;
    e.config.max_parsed_bytes = 64 << 20;
    e.config.chunk_size = 4000;
    e.config.chunk_overlap = 400;
    let text = prose(16);
    e.s3.put(&e.bucket, "big.txt", text.clone().into_bytes())
        .await;
    let p = Pipelines::new(e.config.clone()).await.unwrap();
    p.migrate(&e.app).await.unwrap();
    let before = rss_mib();
    let out = e
        .run(&p, "pipelines.process_document", "big.txt", json!({}))
        .await
        .unwrap();
    println!(
        "16 MiB text: {} chunks, RSS {before} -> {} MiB (stand-ins included)",
        out["chunks"],
        rss_mib()
    );
    let doc = out["document_id"].as_str().unwrap().to_string();
    let id = Uuid::parse_str(&doc).unwrap();

    // The whole-document path: the same text, extracted and chunked in one piece.
    let whole = DefaultExtractor
        .extract("big.txt", text.as_bytes())
        .unwrap();
    let markdown = to_markdown(&paragraphs(&whole.text));
    let expected = TextChunker::new(4000, 400).chunk(id, &markdown);
    drop(markdown);
    assert_eq!(out["chunks"].as_u64().unwrap() as usize, expected.len());
    assert!(expected.len() > 1000, "{}", expected.len());
    assert_eq!(out["characters"].as_u64().unwrap() as usize, {
        let m = to_markdown(&paragraphs(&whole.text));
        m.chars().count()
    });

    let rows = pg_chunks(&e.schema(), &doc).await;
    assert_eq!(rows.len(), expected.len());
    for ((index, cid, text), want) in rows.iter().zip(&expected) {
        assert_eq!(*index as usize, want.index);
        assert_eq!(*cid, want.id);
        assert_eq!(text, &want.text, "chunk {index}");
    }
    check_indexes(&e, &doc, expected.len());

    // A second run of a smaller version replaces every chunk of the first, everywhere.
    e.s3.put(&e.bucket, "big.txt", prose(1).into_bytes()).await;
    let again = e
        .run(&p, "pipelines.process_document", "big.txt", json!({}))
        .await
        .unwrap();
    let n = again["chunks"].as_u64().unwrap() as usize;
    assert!(n < expected.len() / 10, "{n}");
    assert_eq!(pg_chunks(&e.schema(), &doc).await.len(), n);
    check_indexes(&e, &doc, n);
    assert!(
        again["indexed"]["fulltext"]["removed"].as_u64().unwrap() >= (expected.len() - n) as u64
    );
    e.assert_no_violations();
}

/// Elasticsearch and Qdrant hold exactly chunks 0..n of the document.
fn check_indexes(e: &common::Env, doc: &str, n: usize) {
    let id = Uuid::parse_str(doc).unwrap();
    let mut want: Vec<String> = (0..n).map(|i| chunk_id(id, i).to_string()).collect();
    want.sort();
    let es = e.es.state.lock().unwrap();
    let mut ids: Vec<String> = es
        .docs_of(doc)
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, want);
    drop(es);
    let q = e.qdrant.state.lock().unwrap();
    assert_eq!(q.points_of(&format!("{}_documents", e.app), doc), n);
}

/// An extractor that delivers many pages and counts them: what a PDF read page by page does.
struct Pages {
    delivered: Arc<AtomicU32>,
    stopped: Arc<AtomicU32>,
}

impl Extractor for Pages {
    fn extract_with(
        &self,
        _: &str,
        _: &[u8],
        _: &ExtractOptions,
    ) -> Result<ExtractedText, ExtractProblem> {
        Err(ExtractProblem::Unsupported("pages only".into()))
    }

    fn extract_file(
        &self,
        _: &str,
        _: &Path,
        _: &ExtractOptions,
        sink: &mut PageSink<'_>,
    ) -> Result<ExtractedText, ExtractProblem> {
        for n in 1..=5000u32 {
            let text = if n == 40 {
                "This page ES_REJECT fails.".to_string()
            } else {
                format!("Page {n} has a paragraph of its own. ").repeat(12)
            };
            let page = Page {
                number: Some(n),
                blocks: vec![Block::Paragraph { text }],
            };
            if let Err(e) = sink(page) {
                self.stopped.store(n, Ordering::SeqCst);
                return Err(e);
            }
            self.delivered.store(n, Ordering::SeqCst);
        }
        Ok(ExtractedText {
            kind: "pdf".into(),
            mime: "application/pdf".into(),
            pages: 5000,
            ..ExtractedText::default()
        })
    }
}

/// A chunker that completes each page's chunks when the page arrives (the incremental
/// structure-aware chunker does so too; the trait's default gathers the whole document).
struct PerPage(TextChunker);

struct PerPageStream<'a>(&'a TextChunker, Uuid, usize);

impl mindora_pipelines::chunk::ChunkStream for PerPageStream<'_> {
    fn push(&mut self, page: &Page, out: &mut Vec<mindora_pipelines::model::Chunk>) {
        for mut c in self.0.chunk(self.1, &to_markdown(&page.blocks)) {
            c.index = self.2;
            c.id = chunk_id(self.1, self.2);
            self.2 += 1;
            out.push(c);
        }
    }
    fn finish(&mut self, _: &mut Vec<mindora_pipelines::model::Chunk>) {}
}

impl Chunker for PerPage {
    fn chunk(&self, document_id: Uuid, text: &str) -> Vec<mindora_pipelines::model::Chunk> {
        self.0.chunk(document_id, text)
    }
    fn stream(&self, document_id: Uuid) -> Box<dyn mindora_pipelines::chunk::ChunkStream + '_> {
        Box::new(PerPageStream(&self.0, document_id, 0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_stream_stops_extraction_and_reports_the_real_error() {
    let e = env(768).await;
    e.s3.put(&e.bucket, "many.pdf", fixtures::pdf(&[vec!["x".into()]]))
        .await;
    let (delivered, stopped) = (Arc::default(), Arc::default());
    let mut stages = Stages::from_config(&e.config).unwrap();
    stages.extractor = Arc::new(Pages {
        delivered: Arc::clone(&delivered),
        stopped: Arc::clone(&stopped),
    });
    stages.chunker = Arc::new(PerPage(TextChunker::new(400, 80)));
    let p = Pipelines::with_stages(e.config.clone(), stages);
    let err = e
        .run(&p, "pipelines.process_document", "many.pdf", json!({}))
        .await
        .unwrap_err();
    // The index's own error, not the extraction's "stopped".
    assert!(
        matches!(
            &err,
            PipelineError::Service {
                service: "Elasticsearch",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("ES_REJECT") || err.to_string().contains("rejected"),
        "{err}"
    );
    let (delivered, stopped) = (
        delivered.load(Ordering::SeqCst),
        stopped.load(Ordering::SeqCst),
    );
    // Stopped a few pages (the channel and one batch) after the failing one, not at the end.
    assert!(
        stopped > 0 && stopped < 200,
        "delivered {delivered}, stopped at {stopped}"
    );
}
