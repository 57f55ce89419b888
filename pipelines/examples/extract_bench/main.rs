//! Extraction benchmark: real corpus PDFs against pdftotext and PyMuPDF (`pdf_peers`), Rust vs
//! Python on a generated corpus (same run), and a full-pipeline throughput run against a local
//! S3 server, PostgreSQL and a local OpenAI-compatible embedding server.
//!
//! `cargo run --release -p mindora-pipelines --example extract_bench -- [--docs N] [--big-pdf-mb M] [--big-pdf-pages N] [--real-pdfs-only]`

mod pdf_peers;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use mindora_pipelines::extract::{DefaultExtractor, Extractor};
use mindora_pipelines::{PipelineConfig, Pipelines};
use mindora_tests::pipelines::{self as common, fixtures, S3Server, PG_URL};
use serde_json::{json, Value};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak RSS of the largest finished child process (the `mindora-pdf` helper; this runs before
/// any other child is started).
fn children_peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    usage.ru_maxrss as f64 / 1024.0
}

fn corpus(dir: &Path, docs: usize) {
    for i in 0..docs {
        let pages: Vec<Vec<String>> = (1..=20).map(|p| fixtures::prose_page(p + i, 40)).collect();
        std::fs::write(dir.join(format!("doc{i:03}.pdf")), fixtures::pdf(&pages)).unwrap();
        let paras: Vec<String> = (0..400)
            .map(|p| format!("Paragraph {p} of document {i}: planning, budgets and the 年度 review of operations continue."))
            .collect();
        let refs: Vec<&str> = paras.iter().map(String::as_str).collect();
        std::fs::write(dir.join(format!("doc{i:03}.docx")), fixtures::docx(&refs)).unwrap();
        let mut wb = rust_xlsxwriter::Workbook::new();
        for s in 0..3 {
            let ws = wb.add_worksheet();
            ws.set_name(format!("Sheet{s}")).unwrap();
            for r in 0..1000u32 {
                ws.write_string(r, 0, format!("item-{r}")).unwrap();
                ws.write_number(r, 1, r as f64 * 1.5).unwrap();
                ws.write_string(r, 2, "東京 warehouse").unwrap();
                ws.write_number(r, 3, (r * 7 % 13) as f64).unwrap();
            }
        }
        std::fs::write(
            dir.join(format!("doc{i:03}.xlsx")),
            wb.save_to_buffer().unwrap(),
        )
        .unwrap();
    }
}

/// One generated PDF of `pages` pages through the extractor alone: time and peak-RSS growth
/// (the file itself is counted in the RSS before extraction starts).
fn big_pdf_extract(pages: usize) {
    let bytes = fixtures::pdf(
        &(1..=pages)
            .map(|p| fixtures::prose_page(p, 60))
            .collect::<Vec<_>>(),
    );
    // Reset the peak (VmHWM) so it measures extraction, not the fixture generation.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_mb();
    let start = Instant::now();
    let text = DefaultExtractor.extract("big.pdf", &bytes).unwrap();
    println!(
        "== one {:.0} MB PDF, {pages} pages, extract only: {:.1} s, {:.0} MB of text, worker peak RSS {before:.0} MB before -> {:.0} MB after; PDF helper process peak RSS {:.0} MB",
        bytes.len() as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        text.text.len() as f64 / 1e6,
        peak_rss_mb(),
        children_peak_rss_mb()
    );
}

fn rust_bench(dir: &Path) -> Value {
    let mut out = serde_json::Map::new();
    for kind in ["pdf", "docx", "xlsx"] {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == kind))
            .collect();
        files.sort();
        let data: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().to_string(),
                    std::fs::read(p).unwrap(),
                )
            })
            .collect();
        let bytes: usize = data.iter().map(|(_, b)| b.len()).sum();
        let start = Instant::now();
        let mut chars = 0;
        for (name, b) in &data {
            chars += DefaultExtractor
                .extract(name, b)
                .unwrap()
                .text
                .chars()
                .count();
        }
        out.insert(kind.into(), json!({"files": data.len(), "bytes": bytes, "seconds": start.elapsed().as_secs_f64(), "chars": chars}));
    }
    Value::Object(out)
}

fn python_bench(dir: &Path) -> Option<Value> {
    let cache = std::env::var("MINDORA_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/mindora",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let py = format!("{cache}/venv-pipelines/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/extract_bench.py");
    let out = Command::new(&py).arg(script).arg(dir).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big_pages = arg("--big-pdf-pages", 0);
    if big_pages > 0 {
        big_pdf_extract(big_pages);
    }
    pdf_peers::run();
    if std::env::args().any(|a| a == "--real-pdfs-only") {
        return;
    }
    let docs = arg("--docs", 10);
    let big_mb = arg("--big-pdf-mb", 0);
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path(), docs);

    println!("== extraction: {docs} PDF (20 pages), {docs} DOCX (400 paragraphs), {docs} XLSX (3x1000 rows)");
    let rust = rust_bench(dir.path());
    let python = python_bench(dir.path());
    println!(
        "{:<6} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "kind", "MB", "rust MB/s", "rust docs/s", "python MB/s", "ratio"
    );
    for kind in ["pdf", "docx", "xlsx"] {
        let r = &rust[kind];
        let mb = r["bytes"].as_f64().unwrap() / 1e6;
        let rs = r["seconds"].as_f64().unwrap();
        let files = r["files"].as_f64().unwrap();
        let (p_mbs, ratio) = match &python {
            Some(p) => {
                let ps = p[kind]["seconds"].as_f64().unwrap();
                (format!("{:.2}", mb / ps), format!("{:.1}x", ps / rs))
            }
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{kind:<6} {mb:>10.2} {:>10.2} {:>12.1} {p_mbs:>12} {ratio:>8}",
            mb / rs,
            files / rs
        );
    }

    println!(
        "== full pipeline: S3 (s3s-fs) -> extract -> chunk -> embed (local server) -> PostgreSQL"
    );
    let s3 = S3Server::start().await;
    let openai = common::fakes::openai().await;
    let app = common::unique("bench");
    // Drops the app's schema when the benchmark ends, as the tests do.
    let _cleanup = common::Cleanup::default().app(&app);
    let bucket = format!("b-{app}");
    let mut config = PipelineConfig::default();
    s3.configure(&mut config);
    config.database_url = Some(PG_URL.into());
    config.embed_base_url = Some(openai.url.clone());
    config.embed_api_key = Some("bench".into());
    config.embed_model = "fake-embed-768".into();
    config.embed_dimensions = 768;
    // Without Elasticsearch/Qdrant configured, embeddings still run when an embedder is set.
    let p = Pipelines::new(config).await.unwrap();
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let key = path.file_name().unwrap().to_string_lossy().to_string();
        s3.put(&bucket, &key, std::fs::read(&path).unwrap()).await;
        keys.push(key);
    }
    let start = Instant::now();
    let mut chunks = 0;
    for key in &keys {
        let out = p
            .call(
                "pipelines.process_document",
                &common::job("bench"),
                &[],
                &common::kwargs(json!({"app": app, "bucket": bucket, "key": key})),
                &mindora_pipelines::NoProgress,
            )
            .await
            .unwrap();
        chunks += out["chunks"].as_u64().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} documents, {chunks} chunks in {secs:.1}s: {:.0} documents/minute",
        keys.len(),
        keys.len() as f64 / secs * 60.0
    );

    if big_mb > 0 {
        let lines_per_page = 60;
        let page_bytes = fixtures::pdf(&[fixtures::prose_page(1, lines_per_page)]).len();
        let pages = big_mb * 1_000_000 / page_bytes.max(1);
        let big = fixtures::pdf(
            &(1..=pages)
                .map(|p| fixtures::prose_page(p, lines_per_page))
                .collect::<Vec<_>>(),
        );
        println!(
            "== one {:.0} MB PDF ({pages} pages) end to end",
            big.len() as f64 / 1e6
        );
        s3.put(&bucket, "big.pdf", big).await;
        let start = Instant::now();
        let out = p
            .call(
                "pipelines.process_document",
                &common::job("bench"),
                &[],
                &common::kwargs(json!({"app": app, "bucket": bucket, "key": "big.pdf"})),
                &mindora_pipelines::NoProgress,
            )
            .await
            .unwrap();
        println!(
            "pages {} chunks {} in {:.1}s; timings {}",
            out["pages"],
            out["chunks"],
            start.elapsed().as_secs_f64(),
            out["timings_ms"]
        );
    }
    println!("peak RSS of this process: {:.0} MB", peak_rss_mb());
}
