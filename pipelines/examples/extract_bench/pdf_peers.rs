//! Real PDFs (the text PDFs of the corpus, tests/corpus/manifest.tsv) through our extractor
//! (PDFium), poppler's `pdftotext` and PyMuPDF, one after the other in the same run, on the same
//! files. pdftotext runs once per file, as a worker shelling out would (process start-up
//! included); PyMuPDF runs in one Python process timing only its own extraction loop; ours runs
//! in this process after one warm-up document (PDFium is loaded once per worker).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};

fn corpus_pdfs() -> Option<Vec<PathBuf>> {
    let cache = std::env::var_os("MINDORA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mindora")))?;
    let dir = cache.join("corpus/v1/docs");
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifest.tsv"),
    )
    .ok()?;
    let files: Vec<PathBuf> = manifest
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.len() >= 4 && c[2].ends_with(".pdf") && matches!(c[3], "text" | "gap"))
        .map(|c| dir.join(format!("{}.pdf", c[0])))
        .filter(|p| p.is_file())
        .collect();
    (!files.is_empty()).then_some(files)
}

struct Row {
    engine: &'static str,
    docs: usize,
    ok: usize,
    seconds: f64,
}

fn ours(files: &[(PathBuf, Vec<u8>)]) -> Row {
    let options = ExtractOptions::default();
    // Warm-up: binds the PDFium library (once per process in a worker).
    let _ = DefaultExtractor.extract_with("warm.pdf", &files[0].1, &options);
    let start = Instant::now();
    let ok = files
        .iter()
        .filter(|(p, b)| {
            DefaultExtractor
                .extract_with(&p.to_string_lossy(), b, &options)
                .is_ok()
        })
        .count();
    Row {
        engine: "mindora (PDFium)",
        docs: files.len(),
        ok,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn pdftotext(files: &[(PathBuf, Vec<u8>)]) -> Option<Row> {
    let start = Instant::now();
    let mut ok = 0;
    for (path, _) in files {
        let out = Command::new("pdftotext")
            .args(["-q", "-enc", "UTF-8"])
            .arg(path)
            .arg("-")
            .output()
            .ok()?;
        ok += usize::from(out.status.success());
    }
    Some(Row {
        engine: "pdftotext (poppler)",
        docs: files.len(),
        ok,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn pymupdf(files: &[(PathBuf, Vec<u8>)]) -> Option<Row> {
    let cache = std::env::var("MINDORA_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/mindora",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pymupdf_bench.py");
    let out = Command::new(format!("{cache}/venv-pipelines/bin/python"))
        .arg(script)
        .args(files.iter().map(|(p, _)| p))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyMuPDF run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Row {
        engine: "PyMuPDF",
        docs: files.len(),
        ok: v["ok"].as_u64()? as usize,
        seconds: v["seconds"].as_f64()?,
    })
}

/// Prints MB/s and docs/s of the three engines on the corpus PDFs.
pub fn run() {
    let Some(paths) = corpus_pdfs() else {
        println!("== real PDFs: corpus missing; run `bash pipelines/tests/setup.sh` first");
        return;
    };
    let files: Vec<(PathBuf, Vec<u8>)> = paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    let mb = files.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "== real PDFs: {} corpus files, {mb:.1} MB (CJK books, Word/LibreOffice/Distiller/TeX output)",
        files.len()
    );
    let rows: Vec<Row> = [Some(ours(&files)), pdftotext(&files), pymupdf(&files)]
        .into_iter()
        .flatten()
        .collect();
    let poppler = rows
        .iter()
        .find(|r| r.engine.starts_with("pdftotext"))
        .map(|r| r.seconds);
    println!(
        "{:<20} {:>5} {:>5} {:>9} {:>8} {:>8} {:>14}",
        "engine", "docs", "ok", "seconds", "MB/s", "docs/s", "vs pdftotext"
    );
    for r in &rows {
        let ratio = poppler.map_or("n/a".to_string(), |p| format!("{:.2}x", p / r.seconds));
        println!(
            "{:<20} {:>5} {:>5} {:>9.2} {:>8.2} {:>8.1} {:>14}",
            r.engine,
            r.docs,
            r.ok,
            r.seconds,
            mb / r.seconds,
            r.docs as f64 / r.seconds,
            ratio
        );
    }
}
