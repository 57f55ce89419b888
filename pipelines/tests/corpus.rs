//! The real-document corpus: third-party documents listed in `tests/corpus/manifest.tsv`
//! (Debian doc packages, PyPI sdists), fetched and given reference texts by independent tools
//! (`tests/corpus/fetch.sh`, run by `tests/setup.sh`). Each format is scored by token recall
//! and precision against its reference, per document and on average, with thresholds; the
//! failure cases (encrypted, scanned) must fail with the right reason.
//!
//! Tokens: NFKC, lowercase; every CJK ideograph/kana is a token, other letters and digits form
//! words. Scores are multiset overlaps, so reading order does not count, text does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};
use mindora_pipelines::ExtractProblem;
use unicode_normalization::UnicodeNormalization;

struct Doc {
    id: String,
    ext: String,
    expect: String,
    password: Option<String>,
}

fn corpus_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MINDORA_CORPUS_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("MINDORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mindora")
        });
    cache.join("corpus/v1")
}

fn manifest() -> Vec<Doc> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/manifest.tsv");
    let text = std::fs::read_to_string(path).unwrap();
    let cached = std::fs::read_to_string(corpus_dir().join("manifest.tsv")).unwrap_or_default();
    assert!(
        cached == text && corpus_dir().join(".complete").exists(),
        "the corpus at {} is missing or stale: run `bash pipelines/tests/setup.sh` \
         (or pipelines/tests/corpus/fetch.sh)",
        corpus_dir().display()
    );
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Doc {
                id: c[0].to_string(),
                ext: c[2].rsplit('.').next().unwrap().to_string(),
                expect: c[3].to_string(),
                password: c.get(4).map(|s| s.to_string()),
            }
        })
        .collect()
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

/// Tokens in reading order; `None` marks a line break.
fn token_seq(text: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |w: &mut String, out: &mut Vec<Option<String>>| {
        if !w.is_empty() {
            out.push(Some(std::mem::take(w)));
        }
    };
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if is_cjk(c) {
            flush(&mut word, &mut out);
            out.push(Some(c.to_string()));
        } else if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c == '\n' {
                out.push(None);
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

fn tokens(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for t in token_seq(text).into_iter().flatten() {
        *out.entry(t).or_insert(0) += 1;
    }
    out
}

fn overlap(a: &HashMap<String, usize>, b: &HashMap<String, usize>) -> (f64, f64) {
    let common: usize = b
        .iter()
        .map(|(t, n)| (*n).min(*a.get(t).unwrap_or(&0)))
        .sum();
    let total = |m: &HashMap<String, usize>| m.values().sum::<usize>().max(1) as f64;
    (common as f64 / total(b), common as f64 / total(a))
}

/// Character bigrams of the text with every space and punctuation mark removed.
fn blind_bigrams(text: &str) -> HashMap<String, usize> {
    let chars: Vec<char> = token_seq(text)
        .into_iter()
        .flatten()
        .flat_map(|t| t.chars().collect::<Vec<_>>())
        .collect();
    let mut out = HashMap::new();
    for w in chars.windows(2) {
        *out.entry(w.iter().collect::<String>()).or_insert(0) += 1;
    }
    out
}

/// Non-space characters and their counts (for `layout` documents, whose characters engines
/// split into words and order differently).
fn glyphs(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for c in text.nfkc().filter(|c| !c.is_whitespace()) {
        *out.entry(c.to_string()).or_insert(0) += 1;
    }
    out
}

/// (recall, precision) of `ours` against `reference`: the better of the word-token score and
/// a spacing-blind score (character bigrams of the text with all spaces removed). Engines
/// disagree on where a space falls without disagreeing on the text: `pdftotext` writes
/// letter-spaced words as `H e l l o` where PDFium writes `Hello`, and runs a superscript
/// into the word before it differently. Those are not missing text, and the spacing-blind
/// score forgives only them: text that is missing or extra lowers both scores.
fn score(ours: &str, reference: &str) -> (f64, f64) {
    let words = overlap(&tokens(ours), &tokens(reference));
    let blind = overlap(&blind_bigrams(ours), &blind_bigrams(reference));
    (words.0.max(blind.0), words.1.max(blind.1))
}

/// Thresholds: every document at least `floor` (known gaps excepted), the format's mean over
/// all its documents (gaps included) at least `mean`.
struct Bar {
    floor: (f64, f64),
    mean: (f64, f64),
}

fn run_format(ext: &str, bar: Bar) {
    let dir = corpus_dir();
    let docs: Vec<Doc> = manifest()
        .into_iter()
        .filter(|d| {
            d.ext == ext
                && (d.expect != "no_text" && (d.expect != "locked" || d.password.is_some()))
        })
        .collect();
    assert!(!docs.is_empty(), "no {ext} documents in the manifest");
    let mut failures = Vec::new();
    let (mut sum_r, mut sum_p, mut bytes, mut secs) = (0.0, 0.0, 0usize, 0.0);
    eprintln!(
        "{:<30} {:>9} {:>7} {:>9} {:>8}",
        "document", "bytes", "recall", "precision", "ms"
    );
    for d in &docs {
        let data = std::fs::read(dir.join("docs").join(format!("{}.{}", d.id, d.ext))).unwrap();
        let reference =
            std::fs::read_to_string(dir.join("ref").join(format!("{}.txt", d.id))).unwrap();
        let options = ExtractOptions {
            password: d.password.clone(),
            ..ExtractOptions::default()
        };
        let started = Instant::now();
        let result = DefaultExtractor.extract_with(&format!("{}.{}", d.id, d.ext), &data, &options);
        let elapsed = started.elapsed().as_secs_f64();
        bytes += data.len();
        secs += elapsed;
        let (r, p) = match &result {
            Ok(t) if d.expect == "layout" => overlap(&glyphs(&t.text), &glyphs(&reference)),
            Ok(t) => score(&t.text, &reference),
            Err(e) if d.expect == "gap" => {
                eprintln!("{}: failed (known gap): {e}", d.id);
                (0.0, 0.0)
            }
            Err(e) => {
                failures.push(format!("{}: failed: {e}", d.id));
                (0.0, 0.0)
            }
        };
        let gap = d.expect == "gap";
        eprintln!(
            "{:<30} {:>9} {:>7.3} {:>9.3} {:>8.1}{}",
            d.id,
            data.len(),
            r,
            p,
            elapsed * 1e3,
            if gap { "  (known gap)" } else { "" }
        );
        sum_r += r;
        sum_p += p;
        if !gap && result.is_ok() && (r < bar.floor.0 || p < bar.floor.1) {
            failures.push(format!(
                "{}: recall {r:.3} precision {p:.3} below the floor {:?}",
                d.id, bar.floor
            ));
        }
    }
    let n = docs.len() as f64;
    let (mean_r, mean_p) = (sum_r / n, sum_p / n);
    eprintln!(
        "{ext}: {} documents, mean recall {mean_r:.3}, mean precision {mean_p:.3}, {:.1} MB in {secs:.2} s",
        docs.len(),
        bytes as f64 / 1e6
    );
    if mean_r < bar.mean.0 || mean_p < bar.mean.1 {
        failures.push(format!(
            "{ext}: mean recall {mean_r:.3} / precision {mean_p:.3} below {:?}",
            bar.mean
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_pdf() {
    // The bar for every text PDF: recall >= 0.95, precision >= 0.90 against pdftotext.
    run_format(
        "pdf",
        Bar {
            floor: (0.95, 0.90),
            mean: (0.98, 0.95),
        },
    );
}

#[test]
fn corpus_docx() {
    run_format(
        "docx",
        Bar {
            floor: (0.95, 0.90),
            mean: (0.98, 0.95),
        },
    );
}

#[test]
fn corpus_xlsx() {
    run_format(
        "xlsx",
        Bar {
            floor: (0.95, 0.90),
            mean: (0.98, 0.95),
        },
    );
}

#[test]
fn corpus_xls() {
    run_format(
        "xls",
        Bar {
            floor: (0.95, 0.90),
            mean: (0.98, 0.95),
        },
    );
}

#[test]
fn corpus_ods() {
    run_format(
        "ods",
        Bar {
            floor: (0.95, 0.90),
            mean: (0.98, 0.95),
        },
    );
}

#[test]
fn corpus_html() {
    run_format(
        "html",
        Bar {
            floor: (0.90, 0.90),
            mean: (0.95, 0.95),
        },
    );
}

/// Encrypted files without their password, and scans, fail with the reason a person can act on.
#[test]
fn corpus_pdf_failures_say_why() {
    let dir = corpus_dir();
    for d in manifest()
        .iter()
        .filter(|d| d.expect == "locked" || d.expect == "no_text")
    {
        let name = format!("{}.{}", d.id, d.ext);
        let data = std::fs::read(dir.join("docs").join(&name)).unwrap();
        let e = DefaultExtractor.extract(&name, &data).unwrap_err();
        let want = if d.expect == "locked" {
            ExtractProblem::PasswordNeeded("PDF")
        } else {
            ExtractProblem::NoTextLayer { pages: 1 }
        };
        assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&want),
            "{name}: {e}"
        );
        if let Some(pw) = &d.password {
            let wrong = ExtractOptions {
                password: Some(format!("{pw}-wrong")),
                ..ExtractOptions::default()
            };
            let e = DefaultExtractor
                .extract_with(&name, &data, &wrong)
                .unwrap_err();
            assert_eq!(e, ExtractProblem::WrongPassword("PDF"), "{name}");
        }
    }
}

/// Corpus documents whose pages put text side by side: a two-column ACL paper (pdfTeX), an
/// InDesign layout, and a Word 2010 data model with side-by-side tables. Chosen by measurement:
/// on these, reading across the page (`pdftotext -layout`) scores well below reading by column.
const MULTI_COLUMN: &[&str] = &["pdf-naacl06", "pdf-indesign", "pdf-word-2010"];

/// Reading-order score: of the reference's line joins (last token of a line, first token of
/// the next), the share found as adjacent tokens in `ours`. Token scores ignore order; this
/// does not: an engine that reads across columns joins each left-column line to the right
/// column's line, so the reference's joins (left line to the next left line) vanish.
fn order_score(ours: &str, reference: &str) -> f64 {
    let mut lines: Vec<Vec<String>> = vec![Vec::new()];
    for t in token_seq(reference) {
        match t {
            Some(t) => lines.last_mut().unwrap().push(t),
            None => lines.push(Vec::new()),
        }
    }
    lines.retain(|l| !l.is_empty());
    let mut joins: HashMap<(String, String), usize> = HashMap::new();
    for pair in lines.windows(2) {
        let key = (pair[0].last().unwrap().clone(), pair[1][0].clone());
        *joins.entry(key).or_insert(0) += 1;
    }
    let seq: Vec<String> = token_seq(ours).into_iter().flatten().collect();
    let mut bigrams: HashMap<(String, String), usize> = HashMap::new();
    for pair in seq.windows(2) {
        *bigrams
            .entry((pair[0].clone(), pair[1].clone()))
            .or_insert(0) += 1;
    }
    let total: usize = joins.values().sum();
    let found: usize = joins
        .iter()
        .map(|(k, n)| (*n).min(*bigrams.get(k).unwrap_or(&0)))
        .sum();
    found as f64 / total.max(1) as f64
}

/// Reading order on real multi-column pages, against `pdftotext` (which reads columns in
/// order). `pdftotext -layout`, which keeps the page's rows and so interleaves the columns, is
/// scored too, as proof that the check catches interleaving: it must fall below the bar.
#[test]
fn corpus_pdf_reading_order() {
    const BAR: f64 = 0.60;
    let dir = corpus_dir();
    let mut failures = Vec::new();
    for id in MULTI_COLUMN {
        let name = format!("{id}.pdf");
        let path = dir.join("docs").join(&name);
        let data = std::fs::read(&path).unwrap();
        let reference = std::fs::read_to_string(dir.join("ref").join(format!("{id}.txt"))).unwrap();
        let ours = DefaultExtractor.extract(&name, &data).unwrap().text;
        let layout = std::process::Command::new("pdftotext")
            .args(["-q", "-enc", "UTF-8", "-layout"])
            .arg(&path)
            .arg("-")
            .output()
            .expect("pdftotext (run pipelines/tests/setup.sh)");
        let layout = String::from_utf8_lossy(&layout.stdout);
        let (ours_score, layout_score) = (
            order_score(&ours, &reference),
            order_score(&layout, &reference),
        );
        eprintln!(
            "{id}: reading order {ours_score:.3} (pdftotext -layout, interleaved: {layout_score:.3}; bar {BAR})"
        );
        if ours_score < BAR {
            failures.push(format!("{id}: reading order {ours_score:.3} below {BAR}"));
        }
        if layout_score >= BAR {
            failures.push(format!(
                "{id}: the interleaved peer scores {layout_score:.3}, so this page does not test column order"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
