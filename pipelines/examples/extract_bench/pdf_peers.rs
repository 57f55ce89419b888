//! Real PDFs (the text PDFs of the corpus, tests/corpus/manifest.tsv) through our extractor
//! (PDFium), poppler's `pdftotext` and PyMuPDF, one after the other in the same run, on the same
//! files. pdftotext runs once per file, as a worker shelling out would (process start-up
//! included); PyMuPDF runs in one Python process timing only its own open + text loop; ours runs
//! as the worker does: in the pool of warm `mindora-pdf` helpers (started once, then reused
//! across documents; the first start is in the warm-up), once with the bytes sent down the pipe
//! (`DefaultExtractor`, as a job holding the object does) and once from the file's path, which
//! the helper maps itself (`pdf::extract_file`, as PyMuPDF and pdftotext open files).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use mindora_pipelines::extract::{pdf, DefaultExtractor, ExtractOptions, Extractor};

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
        .filter(|c| {
            c.len() >= 4 && c[2].ends_with(".pdf") && matches!(c[3], "text" | "gap" | "layout")
        })
        .map(|c| dir.join(format!("{}.pdf", c[0])))
        .filter(|p| p.is_file())
        .collect();
    (!files.is_empty()).then_some(files)
}

/// How many times each file is read by each engine; the best time counts (the machine is
/// shared, so the minimum is the least noisy figure).
const REPEATS: usize = 3;

struct Row {
    engine: &'static str,
    ok: usize,
    /// Best seconds per file, in file order.
    seconds: Vec<f64>,
}

fn best(mut f: impl FnMut() -> bool) -> (bool, f64) {
    let mut ok = false;
    let mut best = f64::MAX;
    for _ in 0..REPEATS {
        let start = Instant::now();
        ok = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (ok, best)
}

fn ours(files: &[(PathBuf, Vec<u8>)], from_path: bool) -> Row {
    let options = ExtractOptions::default();
    let read = |p: &Path, b: &[u8]| {
        if from_path {
            pdf::extract_file(p, &options).is_ok_and(|t| !t.text.trim().is_empty())
        } else {
            DefaultExtractor
                .extract_with(&p.to_string_lossy(), b, &options)
                .is_ok()
        }
    };
    // Warm-up (page cache, the helper binary's pages, the pool's first helper).
    let _ = read(&files[0].0, &files[0].1);
    let mut ok = 0;
    let mut seconds = Vec::new();
    for (p, b) in files {
        let (good, s) = best(|| read(p, b));
        ok += usize::from(good);
        seconds.push(s);
    }
    Row {
        engine: if from_path {
            "mindora (file path)"
        } else {
            "mindora (bytes)"
        },
        ok,
        seconds,
    }
}

fn pdftotext(files: &[(PathBuf, Vec<u8>)]) -> Option<Row> {
    let mut ok = 0;
    let mut seconds = Vec::new();
    for (path, _) in files {
        let (good, s) = best(|| {
            Command::new("pdftotext")
                .args(["-q", "-enc", "UTF-8"])
                .arg(path)
                .arg("-")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        ok += usize::from(good);
        seconds.push(s);
    }
    Some(Row {
        engine: "pdftotext (poppler)",
        ok,
        seconds,
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
        .arg(REPEATS.to_string())
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
        ok: v["ok"].as_u64()? as usize,
        seconds: v["seconds"]
            .as_array()?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Prints MB/s and docs/s of the three engines on the corpus PDFs, per file and in total, and
/// each engine's median per-file speed ratio to pdftotext.
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
        "== real PDFs: {} corpus files, {mb:.1} MB (CJK books, Word/LibreOffice/Distiller/TeX output); best of {REPEATS} per file",
        files.len()
    );
    let rows: Vec<Row> = [
        Some(ours(&files, false)),
        Some(ours(&files, true)),
        pdftotext(&files),
        pymupdf(&files),
    ]
    .into_iter()
    .flatten()
    .filter(|r| r.seconds.len() == files.len())
    .collect();
    let poppler = rows.iter().find(|r| r.engine.starts_with("pdftotext"));
    println!("per file, MB/s (ratio to pdftotext):");
    print!("{:<34} {:>9}", "file", "KB");
    for r in &rows {
        print!(" {:>22}", r.engine);
    }
    println!();
    for (i, (path, bytes)) in files.iter().enumerate() {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into());
        print!("{:<34} {:>9.0}", name, bytes.len() as f64 / 1e3);
        for r in &rows {
            let rate = bytes.len() as f64 / 1e6 / r.seconds[i];
            let ratio = poppler.map_or(f64::NAN, |p| p.seconds[i] / r.seconds[i]);
            print!(" {:>13.2} ({:>5.2}x)", rate, ratio);
        }
        println!();
    }
    println!(
        "{:<20} {:>5} {:>5} {:>9} {:>13} {:>8} {:>8} {:>16}",
        "engine", "docs", "ok", "seconds", "median ms", "MB/s", "docs/s", "median vs pdftotext"
    );
    for r in &rows {
        let total: f64 = r.seconds.iter().sum();
        let ratio = poppler.map_or("n/a".to_string(), |p| {
            format!(
                "{:.2}x",
                median(
                    p.seconds
                        .iter()
                        .zip(&r.seconds)
                        .map(|(p, o)| p / o)
                        .collect()
                )
            )
        });
        println!(
            "{:<20} {:>5} {:>5} {:>9.2} {:>13.1} {:>8.2} {:>8.1} {:>16}",
            r.engine,
            files.len(),
            r.ok,
            total,
            median(r.seconds.clone()) * 1e3,
            mb / total,
            files.len() as f64 / total,
            ratio
        );
    }
}
