//! OCR of image-only PDF pages, on scans made from real third-party PDFs of the corpus
//! (`tests/corpus/manifest.tsv`): a page of the English Debian project history and a page of
//! the Simplified Chinese Debian maintainer's guide are rendered to 200 DPI grayscale images
//! by poppler's `pdftoppm`, degraded with scanner-like noise, wrapped as image-only PDFs by
//! `img2pdf`, and read back through the extractor with OCR on. The text is scored against
//! `pdftotext` of the original page (token recall, as in `corpus.rs`).
//!
//! Needs (installed by `tests/setup.sh`): tesseract-ocr with eng and chi_sim, img2pdf,
//! poppler-utils, the corpus.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mindora_pipelines::extract::ocr::OcrOptions;
use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};
use mindora_pipelines::ExtractProblem;
use rand::{Rng, SeedableRng};
use unicode_normalization::UnicodeNormalization;

const ENGLISH: (&str, u32) = ("pdf-project-history-en", 9);
const CHINESE: (&str, u32) = ("pdf-maint-guide-zh-cn", 13);

fn cache_dir() -> PathBuf {
    std::env::var_os("MINDORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mindora")
        })
}

fn corpus_doc(id: &str) -> PathBuf {
    let cache = cache_dir();
    let dir = std::env::var_os("MINDORA_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("corpus/v1"));
    let path = dir.join("docs").join(format!("{id}.pdf"));
    assert!(
        path.is_file(),
        "{} is missing: run `bash pipelines/tests/setup.sh`",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `bash pipelines/tests/setup.sh`)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The text poppler finds on one page of the original.
fn reference(pdf: &Path, page: u32) -> String {
    let p = page.to_string();
    String::from_utf8(run(Command::new("pdftotext")
        .args(["-f", &p, "-l", &p])
        .arg(pdf)
        .arg("-")))
    .unwrap()
}

/// One page of `pdf` as an image-only PDF: 200 DPI grayscale, with noise (every pixel
/// jittered by up to ±24 levels, 0.3% salt-and-pepper specks), no rotation.
fn scan(pdf: &Path, page: u32, dir: &Path) -> Vec<u8> {
    let p = page.to_string();
    let base = dir.join("page");
    run(Command::new("pdftoppm")
        .args(["-f", &p, "-l", &p, "-r", "200", "-gray", "-singlefile"])
        .arg(pdf)
        .arg(&base));
    let pgm = std::fs::read(base.with_extension("pgm")).unwrap();
    // Header: "P5\n<w> <h>\n255\n" (pdftoppm writes no comments).
    let mut fields = 0;
    let mut at = 0;
    while fields < 4 {
        let start = at;
        while !pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        if at > start {
            fields += 1;
        }
        at += 1;
    }
    let (head, pixels) = pgm.split_at(at);
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(page));
    let noisy: Vec<u8> = pixels
        .iter()
        .map(|&v| {
            let speck: f64 = rng.random();
            if speck < 0.0015 {
                0
            } else if speck < 0.003 {
                255
            } else {
                (i32::from(v) + rng.random_range(-24..=24)).clamp(0, 255) as u8
            }
        })
        .collect();
    let noisy_path = dir.join("noisy.pgm");
    std::fs::write(&noisy_path, [head, &noisy].concat()).unwrap();
    let out = dir.join("scan.pdf");
    run(Command::new("img2pdf")
        .args(["-s", "200dpix200dpi", "-o"])
        .arg(&out)
        .arg(&noisy_path));
    std::fs::read(out).unwrap()
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

/// Same tokens as `corpus.rs`: NFKC, lowercase, each CJK character a token, other letters and
/// digits form words.
fn tokens(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut word = String::new();
    let flush = |w: &mut String, out: &mut HashMap<String, usize>| {
        if !w.is_empty() {
            *out.entry(std::mem::take(w)).or_insert(0) += 1;
        }
    };
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if is_cjk(c) {
            flush(&mut word, &mut out);
            *out.entry(c.to_string()).or_insert(0) += 1;
        } else if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn recall(ours: &str, reference: &str) -> f64 {
    let (a, b) = (tokens(ours), tokens(reference));
    let common: usize = b
        .iter()
        .map(|(t, n)| (*n).min(*a.get(t).unwrap_or(&0)))
        .sum();
    common as f64 / b.values().sum::<usize>().max(1) as f64
}

/// OCR on, with limits far above what a page takes even on a loaded CI machine (the limits
/// themselves are tested in `time_limits_stop_tesseract`).
fn with_ocr(languages: &str) -> ExtractOptions {
    ExtractOptions {
        ocr: Some(OcrOptions {
            languages: languages.into(),
            page_timeout: Duration::from_secs(900),
            ..OcrOptions::default()
        }),
        time_limit: Duration::from_secs(1800),
        ..ExtractOptions::default()
    }
}

/// OCRs the scanned page and checks its recall against the original's text layer.
fn scanned_page_is_read(doc: (&str, u32), languages: &str, floor: f64) {
    let original = corpus_doc(doc.0);
    let dir = tempfile::tempdir().unwrap();
    let bytes = scan(&original, doc.1, dir.path());
    let name = format!("{}-p{}-scan.pdf", doc.0, doc.1);

    // OCR off (the default): the honest "no text layer" error, unchanged.
    let e = DefaultExtractor.extract(&name, &bytes).unwrap_err();
    assert_eq!(e, ExtractProblem::NoTextLayer { pages: 1 }, "{e}");

    let started = Instant::now();
    let t = DefaultExtractor
        .extract_with(&name, &bytes, &with_ocr(languages))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let seconds = started.elapsed().as_secs_f64();
    let r = recall(&t.text, &reference(&original, doc.1));
    println!(
        "{name} [{languages}]: recall {r:.3}, confidence {:?}, {seconds:.1} s for the page, {} chars",
        t.ocr_confidence,
        t.text.chars().count()
    );
    assert_eq!(t.pages_with_text.as_deref(), Some("1"));
    assert_eq!(t.pages_ocr.as_deref(), Some("1"));
    assert!(t.ocr_confidence.is_some_and(|c| c > 50.0), "{t:?}");
    assert!(r >= floor, "{name}: recall {r:.3} < {floor}\n{}", t.text);
}

#[test]
fn english_scan_is_read() {
    scanned_page_is_read(ENGLISH, "eng", 0.90);
}

#[test]
fn chinese_scan_is_read() {
    // Measured 0.81 (tesseract 5.3.0, Debian chi_sim 4.1.0); the floor leaves room.
    scanned_page_is_read(CHINESE, "chi_sim+eng", 0.75);
}

/// A real text page followed by a scanned one: text from the layer where there is one, OCR
/// only where there is none, in page order.
#[test]
fn mixed_document_says_which_pages_are_ocr() {
    let original = corpus_doc(ENGLISH.0);
    let dir = tempfile::tempdir().unwrap();
    let scanned = dir.path().join("scanned.pdf");
    std::fs::write(&scanned, scan(&original, ENGLISH.1, dir.path())).unwrap();
    let text_page = dir.path().join("text.pdf");
    run(Command::new("pdfseparate")
        .args(["-f", "7", "-l", "7"])
        .arg(&original)
        .arg(&text_page));
    let mixed = dir.path().join("mixed.pdf");
    run(Command::new("pdfunite")
        .arg(&text_page)
        .arg(&scanned)
        .arg(&mixed));
    let bytes = std::fs::read(&mixed).unwrap();

    let off = DefaultExtractor.extract("mixed.pdf", &bytes).unwrap();
    assert_eq!(off.pages_with_text.as_deref(), Some("1"));
    assert_eq!(off.pages_ocr, None);
    assert!(
        off.warnings.iter().any(|w| w.contains("OCR needed")),
        "{off:?}"
    );

    let on = DefaultExtractor
        .extract_with("mixed.pdf", &bytes, &with_ocr("eng"))
        .unwrap();
    assert_eq!(on.pages_with_text.as_deref(), Some("1-2"));
    assert_eq!(on.pages_ocr.as_deref(), Some("2"));
    assert!(
        on.warnings.iter().all(|w| !w.contains("OCR needed")),
        "{on:?}"
    );
    let first = reference(&original, 7);
    let head: String = first
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(on.text.starts_with(&head), "{head:?} first:\n{}", on.text);
    assert!(recall(&on.text, &reference(&original, ENGLISH.1)) >= 0.9);
}

/// Stamps a fax-style header line as real text onto page 1 of argv[1], saved as argv[2]
/// (PyMuPDF from the pinned pipelines venv).
const STAMP: &str = r#"
import sys, pymupdf
doc = pymupdf.open(sys.argv[1])
doc[0].insert_text((20, 14), "FAX 2026-11-30 14:02 PAGE 1/1 BATES 000123", fontsize=7)
doc.save(sys.argv[2])
"#;

/// A scan that carries a little text (a fax header a scanner or fax stamped on as text): with
/// OCR off the header is kept and a warning says OCR would read the rest; with OCR on the
/// page is read, as if it had no text layer.
#[test]
fn scan_with_a_stamped_header_is_read_too() {
    let original = corpus_doc(ENGLISH.0);
    let dir = tempfile::tempdir().unwrap();
    let scanned = dir.path().join("scanned.pdf");
    std::fs::write(&scanned, scan(&original, ENGLISH.1, dir.path())).unwrap();
    let stamped = dir.path().join("stamped.pdf");
    run(Command::new(cache_dir().join("venv-pipelines/bin/python"))
        .args(["-c", STAMP])
        .arg(&scanned)
        .arg(&stamped));
    let bytes = std::fs::read(&stamped).unwrap();

    let off = DefaultExtractor.extract("stamped.pdf", &bytes).unwrap();
    assert!(off.text.contains("BATES 000123"), "{off:?}");
    assert_eq!(off.pages_ocr, None);
    assert!(
        off.warnings
            .iter()
            .any(|w| w.contains("page(s) 1 look like scans")),
        "{off:?}"
    );

    let on = DefaultExtractor
        .extract_with("stamped.pdf", &bytes, &with_ocr("eng"))
        .unwrap();
    assert_eq!(on.pages_ocr.as_deref(), Some("1"));
    assert!(on.warnings.iter().all(|w| !w.contains("scans")), "{on:?}");
    let r = recall(&on.text, &reference(&original, ENGLISH.1));
    assert!(r >= 0.9, "recall {r:.3}:\n{}", on.text);
}

/// The corpus' own scanned PDF still fails honestly with OCR off.
#[test]
fn ocr_off_still_reports_no_text_layer() {
    let path = corpus_doc("pdf-images-only");
    let bytes = std::fs::read(path).unwrap();
    let e = DefaultExtractor.extract("scan.pdf", &bytes).unwrap_err();
    assert!(matches!(e, ExtractProblem::NoTextLayer { .. }), "{e}");
    assert!(e.to_string().contains("OCR needed"), "{e}");
}

#[test]
fn missing_tesseract_or_language_is_a_clear_error() {
    let original = corpus_doc(ENGLISH.0);
    let dir = tempfile::tempdir().unwrap();
    let bytes = scan(&original, ENGLISH.1, dir.path());
    let mut options = with_ocr("eng");
    if let Some(o) = options.ocr.as_mut() {
        o.program = dir.path().join("no-such-tesseract");
    }
    let e = DefaultExtractor
        .extract_with("scan.pdf", &bytes, &options)
        .unwrap_err();
    assert!(matches!(e, ExtractProblem::OcrUnavailable(_)), "{e}");
    assert!(
        e.to_string()
            .contains("OCR requested but tesseract is not installed"),
        "{e}"
    );

    let e = DefaultExtractor
        .extract_with("scan.pdf", &bytes, &with_ocr("eng+xyz_klingon"))
        .unwrap_err();
    assert!(e.to_string().contains("xyz_klingon"), "{e}");
    assert!(e.to_string().contains("not installed"), "{e}");
}

/// Past the per-page limit tesseract is killed and the job fails saying so; past the
/// document's limit likewise. Neither hangs.
#[test]
fn time_limits_stop_tesseract() {
    let original = corpus_doc(CHINESE.0);
    let dir = tempfile::tempdir().unwrap();
    let bytes = scan(&original, CHINESE.1, dir.path());

    let mut per_page = with_ocr("chi_sim+chi_tra+jpn+eng");
    if let Some(o) = per_page.ocr.as_mut() {
        o.page_timeout = Duration::from_secs(1);
    }
    let started = Instant::now();
    let e = DefaultExtractor
        .extract_with("scan.pdf", &bytes, &per_page)
        .unwrap_err();
    assert_eq!(
        e,
        ExtractProblem::OcrTimedOut {
            page: 1,
            seconds: 1
        }
    );
    assert!(
        e.to_string().contains("MINDORA_OCR_PAGE_TIMEOUT_SECS"),
        "{e}"
    );
    // A hang guard, not a speed check: the limit is 1 s, a hang would be minutes.
    assert!(started.elapsed() < Duration::from_secs(60));

    let mut per_doc = with_ocr("chi_sim+chi_tra+jpn+eng");
    per_doc.time_limit = Duration::from_secs(2);
    let e = DefaultExtractor
        .extract_with("scan.pdf", &bytes, &per_doc)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ExtractProblem::TimedOut {
                done: 0,
                pages: 1,
                ..
            }
        ),
        "{e}"
    );
}
