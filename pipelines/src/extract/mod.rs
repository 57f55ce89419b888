//! Extract stage: bytes to plain text.
//!
//! The type is detected from the bytes (magic numbers, ZIP members, text sniffing); the file
//! name only breaks ties between text formats (CSV vs Markdown vs plain) and names the file in
//! errors. Parsers run inside `catch_unwind` because some of them panic on malformed input, and
//! one bad upload must fail its job, not the worker.

mod detect;
mod html;
mod office;
mod pdf;

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use detect::{detect, Kind};

use crate::error::ExtractProblem;
use crate::model::ExtractedText;

/// A text extractor. A trait so a stage can be swapped (e.g. an OCR service for scans).
pub trait Extractor: Send + Sync {
    /// Extracts the text of `bytes`; `name` is the file name (a hint for text formats only).
    fn extract(&self, name: &str, bytes: &[u8]) -> Result<ExtractedText, ExtractProblem>;
}

/// The built-in extractor for PDF, DOCX, XLSX/XLS/ODS, CSV, HTML, Markdown and plain text.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultExtractor;

impl Extractor for DefaultExtractor {
    fn extract(&self, name: &str, bytes: &[u8]) -> Result<ExtractedText, ExtractProblem> {
        let kind = detect(name, bytes)?;
        let (text, pages) = match catch_unwind(AssertUnwindSafe(|| run(kind, bytes))) {
            Ok(r) => r?,
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the parser crashed".into());
                return Err(ExtractProblem::Corrupt {
                    format: kind.label(),
                    detail,
                });
            }
        };
        let text = normalize(&text);
        if text.trim().is_empty() {
            return Err(ExtractProblem::Empty);
        }
        Ok(ExtractedText {
            kind: kind.name().to_string(),
            mime: kind.mime().to_string(),
            pages,
            text,
        })
    }
}

fn run(kind: Kind, bytes: &[u8]) -> Result<(String, u32), ExtractProblem> {
    match kind {
        Kind::Pdf => pdf::extract(bytes),
        Kind::Docx => office::docx(bytes),
        Kind::Xlsx | Kind::Xls | Kind::Ods => office::spreadsheet(kind, bytes),
        Kind::Csv => office::csv(bytes).map(|t| (t, 1)),
        Kind::Html => Ok((html::to_text(&detect::decode_text(bytes)), 1)),
        Kind::Markdown | Kind::Text => Ok((detect::decode_text(bytes), 1)),
    }
}

/// Unifies line endings, trims trailing spaces and collapses runs of blank lines, so chunking
/// sees paragraphs as exactly one blank line whatever the source format did.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        let line = line.trim_end_matches([' ', '\t', '\u{a0}', '\u{3000}', '\u{c}']);
        let line = line.trim_start_matches('\u{c}');
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
