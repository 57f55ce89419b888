//! Structure against the documents' own, on the real-document corpus (tests/corpus): PDF outline
//! titles come out as Markdown headings, HTML `h1`–`h4` as headings, each Word heading-style
//! paragraph as a heading, and table rows (HTML, Word, spreadsheets) as Markdown table rows.
//! The ground truth is read independently of the extractor: bookmarks through pdfium-render's
//! own API, HTML headings and rows by a CSS selector, Word styles from `document.xml` directly.
//! Skips with a message when the corpus is absent (CI fetches it: tests/setup.sh).

use std::path::{Path, PathBuf};

use mindora_pipelines::document::to_markdown;
use mindora_pipelines::extract::{pdf, DefaultExtractor, ExtractOptions, Extractor};

fn corpus_docs() -> Option<PathBuf> {
    let base = std::env::var_os("MINDORA_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("MINDORA_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mindora")
                })
                .join("corpus/v1")
        });
    if !base.join(".complete").exists() {
        eprintln!(
            "SKIP: the corpus at {} is absent: run `bash pipelines/tests/setup.sh`",
            base.display()
        );
        return None;
    }
    Some(base.join("docs"))
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn markdown(path: &Path) -> String {
    let mut md = String::new();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    DefaultExtractor
        .extract_file(&name, path, &ExtractOptions::default(), &mut |page| {
            md.push_str(&to_markdown(&page.blocks));
            md.push_str("\n\n");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    md
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn headings(md: &str) -> Vec<String> {
    md.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| norm(l.trim_start_matches('#')))
        .collect()
}

/// A title is found when a heading line is it, or it with printed numbering in front.
fn found(title: &str, heads: &[String]) -> bool {
    let t = norm(title);
    t.is_empty()
        || heads.iter().any(|h| {
            h == &t
                || (h.ends_with(&t)
                    && h[..h.len() - t.len()]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()))
        })
}

/// Markdown table rows as their cells' normalized text.
fn table_rows(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("| ---"))
        .map(|l| {
            l.replace("\\|", "")
                .trim_matches('|')
                .split('|')
                .map(norm)
                .collect()
        })
        .collect()
}

/// A row is found when one Markdown row holds its non-empty cells in order (a cell may hold
/// more, e.g. an image's alt text the ground truth leaves out).
fn row_found(cells: &[String], rows: &[Vec<String>]) -> bool {
    let want: Vec<String> = cells
        .iter()
        .map(|c| norm(c))
        .filter(|c| !c.is_empty())
        .collect();
    want.is_empty()
        || rows.iter().any(|r| {
            let mut got = r.iter();
            want.iter().all(|w| got.any(|g| g.contains(w.as_str())))
        })
}

fn share(hits: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

#[test]
fn pdf_outline_titles_are_headings() {
    let Some(dir) = corpus_docs() else { return };
    let pdfium = pdf::engine::pdfium().unwrap();
    let (mut hits, mut total) = (0, 0);
    for path in files(&dir, "pdf-") {
        let Ok(doc) = pdfium.load_pdf_from_file(&path, None) else {
            continue;
        };
        let titles: Vec<String> = doc
            .bookmarks()
            .iter()
            .filter_map(|b| b.title())
            // Single letters (an index's A, B, C) are not told from text by any rule.
            .filter(|t| norm(t).chars().count() >= 2)
            .collect();
        drop(doc);
        if titles.len() < 3 {
            continue;
        }
        let heads = headings(&markdown(&path));
        let h = titles.iter().filter(|t| found(t, &heads)).count();
        eprintln!(
            "{}: {h}/{} outline titles as headings",
            path.display(),
            titles.len()
        );
        hits += h;
        total += titles.len();
    }
    assert!(total > 50, "too few outline titles in the corpus: {total}");
    eprintln!("PDF outline titles as headings: {hits}/{total}");
    assert!(
        share(hits, total) >= 0.9,
        "only {hits} of {total} outline titles came out as headings"
    );
}

#[test]
fn html_headings_and_table_rows() {
    let Some(dir) = corpus_docs() else { return };
    let heading = scraper::Selector::parse("h1, h2, h3, h4").unwrap();
    let tr = scraper::Selector::parse("tr").unwrap();
    let cell = scraper::Selector::parse("td, th").unwrap();
    let table = scraper::Selector::parse("table").unwrap();
    for path in files(&dir, "html-") {
        let html = std::fs::read(&path).unwrap();
        let doc = scraper::Html::parse_document(&String::from_utf8_lossy(&html));
        let md = markdown(&path);
        let heads = headings(&md);
        for h in doc.select(&heading) {
            let title: String = h.text().collect::<Vec<_>>().join(" ");
            assert!(
                found(&title, &heads),
                "{}: <{}> {title:?} is not a heading",
                path.display(),
                h.value().name()
            );
        }
        let rows = table_rows(&md);
        for r in doc.select(&tr) {
            if r.select(&table).next().is_some() {
                continue;
            }
            let cells: Vec<String> = r
                .children()
                .filter_map(scraper::ElementRef::wrap)
                .filter(|c| cell.matches(c))
                .map(|c| c.text().collect::<Vec<_>>().join(" "))
                .collect();
            assert!(
                row_found(&cells, &rows),
                "{}: row {cells:?} is not a Markdown table row",
                path.display()
            );
        }
    }
}

/// Word paragraphs in a heading style and table rows, read from `word/document.xml` and
/// `word/styles.xml` directly.
fn docx_truth(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        if let Ok(mut f) = zip.by_name(name) {
            std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        }
        s
    };
    let styles = read("word/styles.xml");
    let document = read("word/document.xml");
    // Style ids whose name is "heading N" or "Title".
    let mut heading_ids = Vec::new();
    for s in styles.split("<w:style ").skip(1) {
        let id = attr(s, "w:styleId=\"");
        let name = s
            .find("<w:name ")
            .map(|i| attr(&s[i..], "w:val=\""))
            .unwrap_or_default()
            .to_lowercase();
        if name.starts_with("heading") || name == "title" {
            heading_ids.push(id);
        }
    }
    let mut heads = Vec::new();
    for p in document
        .split("<w:p>")
        .flat_map(|s| s.split("<w:p "))
        .skip(1)
    {
        let p = &p[..p.find("</w:p>").unwrap_or(p.len())];
        if let Some(i) = p.find("<w:pStyle ") {
            if heading_ids.contains(&attr(&p[i..], "w:val=\"")) {
                heads.push(texts(p));
            }
        }
    }
    (heads, table_rows_xml(&document))
}

/// Rows of top-level tables (not those holding a nested table, whose rows our Markdown
/// flattens into the cell), cells' text in order.
fn table_rows_xml(xml: &str) -> Vec<Vec<String>> {
    let (mut depth, mut rows) = (0usize, Vec::new());
    let mut row: Option<(Vec<String>, bool)> = None;
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let tag =
            |t: &str| rest.starts_with(&format!("<{t}>")) || rest.starts_with(&format!("<{t} "));
        if tag("w:tbl") {
            depth += 1;
            if depth > 1 {
                if let Some(r) = row.as_mut() {
                    r.1 = true;
                }
            }
        } else if rest.starts_with("</w:tbl>") {
            depth = depth.saturating_sub(1);
        } else if depth == 1 && tag("w:tr") {
            row = Some((Vec::new(), false));
        } else if depth == 1 && rest.starts_with("</w:tr>") {
            if let Some((cells, nested)) = row.take() {
                if !nested {
                    rows.push(cells);
                }
            }
        } else if depth == 1 && tag("w:tc") {
            if let Some(r) = row.as_mut() {
                r.0.push(String::new());
            }
        } else if tag("w:t") {
            let body = &rest[rest.find('>').unwrap_or(0) + 1..];
            let text = &body[..body.find("</w:t>").unwrap_or(0)];
            if let Some(cell) = row.as_mut().and_then(|r| r.0.last_mut()) {
                cell.push_str(text);
            }
        }
        rest = &rest[1..];
    }
    rows
}

fn attr(s: &str, key: &str) -> String {
    s.find(key)
        .map(|i| {
            let v = &s[i + key.len()..];
            v[..v.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_default()
}

fn texts(xml: &str) -> String {
    let mut out = String::new();
    for part in xml.split("<w:t").skip(1) {
        if let Some(start) = part.find('>') {
            if part.starts_with('>') || part.starts_with(' ') {
                let body = &part[start + 1..];
                out.push_str(&body[..body.find("</w:t>").unwrap_or(0)]);
            }
        }
    }
    out
}

#[test]
fn word_heading_styles_and_table_rows() {
    let Some(dir) = corpus_docs() else { return };
    let (mut heads_total, mut rows_total) = (0, 0);
    for path in files(&dir, "docx-") {
        let (heads, rows) = docx_truth(&path);
        let md = markdown(&path);
        let got = headings(&md);
        for h in &heads {
            assert!(found(h, &got), "{}: {h:?} is not a heading", path.display());
        }
        let md_rows = table_rows(&md);
        for r in &rows {
            assert!(
                row_found(r, &md_rows),
                "{}: row {r:?} is not a Markdown table row",
                path.display()
            );
        }
        heads_total += heads.len();
        rows_total += rows.len();
    }
    assert!(
        heads_total > 0 && rows_total > 0,
        "{heads_total} {rows_total}"
    );
}

#[test]
fn spreadsheet_rows_are_table_rows() {
    let Some(dir) = corpus_docs() else { return };
    let refs = dir.parent().unwrap().join("ref");
    for prefix in ["xlsx-", "xls-", "ods-"] {
        for path in files(&dir, prefix) {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let reference = std::fs::read_to_string(refs.join(format!("{stem}.txt"))).unwrap();
            let md = markdown(&path);
            let rows = table_rows(&md);
            let truth: Vec<Vec<String>> = reference
                .lines()
                .filter(|l| l.contains('\t'))
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect();
            let hits = truth.iter().filter(|r| row_found(r, &rows)).count();
            assert!(
                share(hits, truth.len()) >= 0.9,
                "{stem}: {hits}/{} reference rows as table rows",
                truth.len()
            );
        }
    }
}
