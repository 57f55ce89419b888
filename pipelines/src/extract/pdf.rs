//! PDF text through pdf-extract (lopdf underneath).

use pdf_extract::{Document, PlainTextOutput};

use crate::error::ExtractProblem;

fn corrupt(detail: impl std::fmt::Display) -> ExtractProblem {
    ExtractProblem::Corrupt {
        format: "PDF",
        detail: detail.to_string(),
    }
}

fn is_crypto_error(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("decrypt") || d.contains("encrypt") || d.contains("password")
}

/// Returns the text (pages separated by blank lines) and the page count.
pub fn extract(bytes: &[u8]) -> Result<(String, u32), ExtractProblem> {
    let mut doc = Document::load_mem(bytes).map_err(|e| {
        let detail = e.to_string();
        if is_crypto_error(&detail) {
            ExtractProblem::Encrypted("PDF")
        } else {
            corrupt(detail)
        }
    })?;
    if doc.is_encrypted() || doc.trailer.get(b"Encrypt").is_ok() {
        // Owner-password-only PDFs open with the empty user password; anything else is locked.
        if doc.decrypt("").is_err() {
            return Err(ExtractProblem::Encrypted("PDF"));
        }
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(corrupt("the document has no pages"));
    }
    // One pass over the whole document (output_doc_page looks the page tree up again for every
    // page, which is quadratic on large PDFs); page by page only when that pass fails, so one
    // unreadable page does not lose the rest.
    let mut text = String::new();
    let whole = {
        let mut out = PlainTextOutput::new(&mut text);
        pdf_extract::output_doc(&doc, &mut out)
    };
    if whole.is_ok() {
        return Ok((text, pages.len() as u32));
    }
    text.clear();
    let mut failures = 0usize;
    let mut last_error = String::new();
    for &page in pages.keys() {
        let start = text.len();
        let result = {
            let mut out = PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(&doc, &mut out, page)
        };
        if let Err(e) = result {
            // One unreadable page should not lose the rest of the document.
            text.truncate(start);
            failures += 1;
            last_error = e.to_string();
        }
        text.push_str("\n\n");
    }
    if failures == pages.len() {
        return Err(if is_crypto_error(&last_error) {
            ExtractProblem::Encrypted("PDF")
        } else {
            corrupt(format!("no page could be read: {last_error}"))
        });
    }
    if failures > 0 {
        tracing::warn!(failures, pages = pages.len(), error = %last_error, "some PDF pages could not be read");
    }
    Ok((text, pages.len() as u32))
}
