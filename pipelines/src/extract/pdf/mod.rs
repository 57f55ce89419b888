//! PDF text through PDFium (see [`engine`] for why and how it is loaded).
//!
//! Pages are read one at a time (each closed before the next), so memory stays at the file
//! plus one page plus the text, whatever the page count. The time limit is checked between
//! pages. Failures say what is wrong: a password is needed or wrong, no text layer (scans),
//! damaged structure (text kept, with a warning), or a file PDFium cannot open at all.

mod damage;
pub mod engine;

use std::time::Instant;

use pdfium_render::prelude::{
    PdfPage, PdfPageObjectType, PdfPageObjectsCommon, PdfiumError, PdfiumInternalError,
};

use super::ExtractOptions;
use crate::error::ExtractProblem;

/// What a PDF yielded.
#[derive(Debug, Default)]
pub struct PdfText {
    /// Text, pages separated by blank lines.
    pub text: String,
    /// Page count.
    pub pages: u32,
    /// 1-based numbers of the pages that had text.
    pub pages_with_text: Vec<u32>,
    /// Things the user should know (damage repaired, pages without a text layer).
    pub warnings: Vec<String>,
    /// Pages whose text came from OCR (also in `pages_with_text`).
    pub ocr: super::ocr::OcrReport,
}

fn corrupt(detail: impl Into<String>) -> ExtractProblem {
    ExtractProblem::Corrupt {
        format: "PDF",
        detail: detail.into(),
    }
}

/// Extracts the text of every page of `bytes`.
pub fn extract(bytes: &[u8], options: &ExtractOptions) -> Result<PdfText, ExtractProblem> {
    let started = Instant::now();
    let pdfium = engine::pdfium()?;
    let mut warnings = damage::check(bytes);
    let doc = pdfium
        .load_pdf_from_byte_slice(bytes, options.password.as_deref())
        .map_err(|e| open_error(e, options.password.is_some()))?;
    let pages = doc.pages();
    let count = u32::try_from(pages.len()).unwrap_or(0);
    if count == 0 {
        return Err(corrupt("the document has no pages"));
    }
    let mut out = PdfText {
        pages: count,
        ..PdfText::default()
    };
    let mut image_only = Vec::new();
    let mut unreadable = Vec::new();
    for number in 1..=count {
        if started.elapsed() > options.time_limit {
            return Err(ExtractProblem::TimedOut {
                seconds: options.time_limit.as_secs(),
                done: number - 1,
                pages: count,
            });
        }
        let index = i32::try_from(number - 1).unwrap_or(i32::MAX);
        let page = match pages.get(index) {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(page = number, error = %e, "PDF page could not be loaded");
                unreadable.push(number);
                continue;
            }
        };
        let text = match page.text() {
            Ok(t) => t.all(),
            Err(e) => {
                tracing::debug!(page = number, error = %e, "PDF page text could not be read");
                unreadable.push(number);
                continue;
            }
        };
        if text.trim().is_empty() {
            if has_images(&page) {
                // Off unless the job asked for OCR (see super::ocr).
                if let Some(ocr) = &options.ocr {
                    let deadline = started + options.time_limit;
                    if let Some(found) = super::ocr::page(&page, number, ocr, deadline, count)? {
                        out.ocr.add(number, &found);
                        out.pages_with_text.push(number);
                        out.text.push_str(&found.text);
                        out.text.push_str("\n\n");
                        continue;
                    }
                }
                image_only.push(number);
            }
            continue;
        }
        out.pages_with_text.push(number);
        out.text.push_str(&text);
        out.text.push_str("\n\n");
    }
    if out.pages_with_text.is_empty() {
        return Err(if !image_only.is_empty() {
            ExtractProblem::NoTextLayer { pages: count }
        } else if unreadable.len() as u32 == count {
            corrupt("no page could be read")
        } else {
            ExtractProblem::Empty
        });
    }
    if !image_only.is_empty() {
        warnings.push(format!(
            "page(s) {} have no text layer (images only); OCR needed for their text",
            ranges(&image_only)
        ));
    }
    if !unreadable.is_empty() {
        warnings.push(format!("page(s) {} could not be read", ranges(&unreadable)));
    }
    out.warnings = warnings;
    Ok(out)
}

fn has_images(page: &PdfPage<'_>) -> bool {
    page.objects()
        .iter()
        .any(|o| o.object_type() == PdfPageObjectType::Image)
}

fn open_error(e: PdfiumError, had_password: bool) -> ExtractProblem {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            if had_password {
                ExtractProblem::WrongPassword("PDF")
            } else {
                ExtractProblem::PasswordNeeded("PDF")
            }
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            ExtractProblem::Unsupported(
                "PDF encrypted with a security handler PDFium does not support".into(),
            )
        }
        PdfiumError::PdfiumLibraryInternalError(
            PdfiumInternalError::FormatError | PdfiumInternalError::FileError,
        ) => corrupt(
            "no document structure could be found, even after rebuilding the cross-reference table",
        ),
        other => corrupt(format!("PDFium could not open it: {other}")),
    }
}

/// Page numbers as compact ranges: `1-3,5,7-9`.
pub fn ranges(pages: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < pages.len() {
        let start = pages[i];
        let mut end = start;
        while i + 1 < pages.len() && pages[i + 1] == end + 1 {
            i += 1;
            end = pages[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_are_compact() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
