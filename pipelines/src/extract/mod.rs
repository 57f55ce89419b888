//! Extract stage: bytes to plain text.
//!
//! The type is detected from the bytes (magic numbers, ZIP members, text sniffing); the file
//! name only breaks ties between text formats (CSV vs Markdown vs plain) and names the file in
//! errors. One module per format: `pdf` (PDFium), `docx` (docx-rs), `sheet` (calamine: XLSX,
//! XLS, ODS; and CSV), `html` (html5ever through scraper). Parsers run inside `catch_unwind`:
//! one bad upload must fail its job, not the worker.

mod detect;
mod docx;
mod html;
mod html_blocks;
pub mod ocr;
pub mod pdf;
mod sheet;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

pub use detect::{detect, Kind};

use crate::document::{paragraphs, Block, Page};
use crate::error::ExtractProblem;
use crate::model::ExtractedText;

/// Receives a document's pages in reading order as they are extracted; an `Err` (typically
/// [`ExtractProblem::Stopped`]) ends the extraction with that problem.
pub type PageSink<'a> = dyn FnMut(Page) -> Result<(), ExtractProblem> + 'a;

/// Per-document settings of an extraction.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Password for an encrypted PDF (the job's `options.password`).
    pub password: Option<String>,
    /// Wall-time limit for one document (a PDF's helper process is killed at it).
    pub time_limit: Duration,
    /// OCR for PDF pages without a text layer; `None` (the default): such pages are reported.
    pub ocr: Option<ocr::OcrOptions>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            password: None,
            time_limit: Duration::from_secs(300),
            ocr: None,
        }
    }
}

/// A text extractor. A trait so a stage can be swapped (e.g. an OCR service for scans).
pub trait Extractor: Send + Sync {
    /// Extracts the text of `bytes`; `name` is the file name (a hint for text formats only).
    fn extract(&self, name: &str, bytes: &[u8]) -> Result<ExtractedText, ExtractProblem> {
        self.extract_with(name, bytes, &ExtractOptions::default())
    }

    /// Like [`Extractor::extract`], with a password and a time limit.
    fn extract_with(
        &self,
        name: &str,
        bytes: &[u8],
        options: &ExtractOptions,
    ) -> Result<ExtractedText, ExtractProblem>;

    /// Extracts the document stored at `path` page by page into `sink`, so a caller can chunk,
    /// embed and index while later pages are still being read. The returned summary's `text`
    /// is empty: the text went to the sink. The default reads the whole file and delivers one
    /// page of paragraphs; [`DefaultExtractor`] streams PDFs page by page with their structure.
    fn extract_file(
        &self,
        name: &str,
        path: &Path,
        options: &ExtractOptions,
        sink: &mut PageSink<'_>,
    ) -> Result<ExtractedText, ExtractProblem> {
        let bytes = std::fs::read(path).map_err(|e| ExtractProblem::Unreadable(e.to_string()))?;
        let mut out = self.extract_with(name, &bytes, options)?;
        sink(Page {
            number: None,
            blocks: paragraphs(&std::mem::take(&mut out.text)),
        })?;
        Ok(out)
    }
}

/// The built-in extractor for PDF, DOCX, XLSX/XLS/ODS, CSV, HTML, Markdown and plain text.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultExtractor;

impl Extractor for DefaultExtractor {
    fn extract_with(
        &self,
        name: &str,
        bytes: &[u8],
        options: &ExtractOptions,
    ) -> Result<ExtractedText, ExtractProblem> {
        let kind = detect(name, bytes)?;
        let mut out = guarded(kind, || run(kind, bytes, options))?;
        out.text = normalize(&out.text);
        if out.text.trim().is_empty() {
            return Err(ExtractProblem::Empty);
        }
        out.kind = kind.name().to_string();
        out.mime = kind.mime().to_string();
        Ok(out)
    }

    fn extract_file(
        &self,
        name: &str,
        path: &Path,
        options: &ExtractOptions,
        sink: &mut PageSink<'_>,
    ) -> Result<ExtractedText, ExtractProblem> {
        if pdf::is_pdf_file(path)? {
            let p = pdf::extract_blocks(path, options, sink)?;
            return Ok(ExtractedText {
                kind: Kind::Pdf.name().to_string(),
                mime: Kind::Pdf.mime().to_string(),
                pages: p.pages,
                text: String::new(),
                pages_with_text: Some(pdf::ranges(&p.pages_with_text)),
                pages_ocr: (!p.ocr.pages.is_empty()).then(|| pdf::ranges(&p.ocr.pages)),
                ocr_confidence: p.ocr.confidence(),
                warnings: p.warnings,
            });
        }
        // Other formats are parsed whole (ZIP containers, HTML trees); their size is capped
        // by the caller.
        let bytes = std::fs::read(path).map_err(|e| ExtractProblem::Unreadable(e.to_string()))?;
        let kind = detect(name, &bytes)?;
        let (mut out, pages) = guarded(kind, || structured(kind, &bytes))?;
        if pages.iter().all(|p| p.blocks.is_empty()) {
            return Err(ExtractProblem::Empty);
        }
        for page in pages {
            sink(page)?;
        }
        out.kind = kind.name().to_string();
        out.mime = kind.mime().to_string();
        Ok(out)
    }
}

/// Runs a parser, turning its panic into an error naming the format: a parser bug, not proof
/// the file is damaged.
fn guarded<T>(
    kind: Kind,
    parse: impl FnOnce() -> Result<T, ExtractProblem>,
) -> Result<T, ExtractProblem> {
    match catch_unwind(AssertUnwindSafe(parse)) {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(ExtractProblem::Unsupported(format!(
                "{} that the {} parser could not handle (it crashed: {detail})",
                kind.label(),
                kind.name()
            )))
        }
    }
}

/// The document model of a non-PDF document in its format's own structure: its summary (text
/// left empty) and its pages (one per sheet for workbooks, one for other formats).
pub fn structured(kind: Kind, bytes: &[u8]) -> Result<(ExtractedText, Vec<Page>), ExtractProblem> {
    let one = |blocks: Vec<Block>| {
        vec![Page {
            number: None,
            blocks,
        }]
    };
    let pages = match kind {
        Kind::Pdf => {
            let mut out = run(kind, bytes, &ExtractOptions::default())?;
            let text = normalize(&std::mem::take(&mut out.text));
            return Ok((out, one(paragraphs(&text))));
        }
        Kind::Docx => one(docx::blocks(bytes)?),
        Kind::Xlsx | Kind::Xls | Kind::Ods => sheet::spreadsheet_pages(kind, bytes)?,
        Kind::Csv => one(sheet::csv_blocks(bytes)?),
        Kind::Html => one(html_blocks::blocks(&html::decode(bytes))),
        Kind::Markdown => one(crate::markdown::parse(&normalize(&detect::decode_text(
            bytes,
        )))),
        Kind::Text => one(paragraphs(&normalize(&detect::decode_text(bytes)))),
    };
    let out = ExtractedText {
        pages: u32::try_from(pages.len()).unwrap_or(u32::MAX),
        ..ExtractedText::default()
    };
    Ok((out, pages))
}

fn run(
    kind: Kind,
    bytes: &[u8],
    options: &ExtractOptions,
) -> Result<ExtractedText, ExtractProblem> {
    let plain = |text: String, pages: u32| ExtractedText {
        text,
        pages,
        ..ExtractedText::default()
    };
    Ok(match kind {
        Kind::Pdf => {
            let p = pdf::extract(bytes, options)?;
            ExtractedText {
                pages: p.pages,
                text: p.text,
                pages_with_text: Some(pdf::ranges(&p.pages_with_text)),
                pages_ocr: (!p.ocr.pages.is_empty()).then(|| pdf::ranges(&p.ocr.pages)),
                ocr_confidence: p.ocr.confidence(),
                warnings: p.warnings,
                ..ExtractedText::default()
            }
        }
        Kind::Docx => plain(docx::docx(bytes)?, 1),
        Kind::Xlsx | Kind::Xls | Kind::Ods => {
            let (text, sheets) = sheet::spreadsheet(kind, bytes)?;
            plain(text, sheets)
        }
        Kind::Csv => plain(sheet::csv(bytes)?, 1),
        Kind::Html => plain(html::to_text(&html::decode(bytes)), 1),
        Kind::Markdown | Kind::Text => plain(detect::decode_text(bytes), 1),
    })
}

/// Unifies line endings, trims trailing spaces and collapses runs of blank lines, so chunking
/// sees paragraphs as exactly one blank line whatever the source format did.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        let line = line.trim_end_matches([' ', '\t', '\u{a0}', '\u{3000}', '\u{c}', '\0']);
        let line = line.trim_start_matches(['\u{c}', '\u{feff}']);
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_blank_lines() {
        assert_eq!(normalize("a\r\n\r\n\r\nb  \nc\n\n"), "a\n\nb\nc");
    }

    #[test]
    fn empty_is_reported() {
        assert_eq!(
            DefaultExtractor.extract("a.txt", b"").unwrap_err(),
            ExtractProblem::Empty
        );
        assert_eq!(
            DefaultExtractor.extract("a.txt", b" \n\n ").unwrap_err(),
            ExtractProblem::Empty
        );
    }

    #[test]
    fn chinese_text_survives() {
        let t = DefaultExtractor
            .extract("doc.txt", "第一段。中文文本。\n\n第二段".as_bytes())
            .unwrap();
        assert_eq!(t.text, "第一段。中文文本。\n\n第二段");
        assert_eq!(t.kind, "text");
    }
}
