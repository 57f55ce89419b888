//! A PDF file read page by page into a sink, in page order, as the pages arrive.
//!
//! Why: a document's size must not decide the worker's memory. The file is read by a warm
//! helper that maps it (no copy here, none down a pipe), each page goes to the sink as soon as
//! the helper sends it, and the helper is held back by a bounded queue when the sink is slower,
//! so what is held is a few pages, whatever the page count. A page without a text layer is
//! drawn by the same helper as the walk passes it and OCR'd here before the next page is
//! delivered (a second helper is not needed, so a pool of one cannot deadlock).

use std::path::Path;
use std::time::Instant;

use super::isolate::{self, Image, Images, PageOut, Source};
use super::pages::PageOutcome;
use super::{letters, nothing, page_warnings, ExtractOptions, PdfText};
use crate::document::{paragraphs, Block, Page};
use crate::error::ExtractProblem;
use crate::extract::{ocr, PageSink};

/// Extracts the PDF at `path` into `sink`, page by page in page order. The returned
/// [`PdfText`]'s `text` is empty (the pages went to the sink).
pub fn extract_blocks(
    path: &Path,
    options: &ExtractOptions,
    sink: &mut PageSink<'_>,
) -> Result<PdfText, ExtractProblem> {
    let deadline = Instant::now() + options.time_limit;
    // The helper draws pages for OCR into this directory; each image is consumed by the OCR of
    // its page, the directory removed at the end.
    let scratch = match &options.ocr {
        Some(_) => Some(
            tempfile::Builder::new()
                .prefix("mindora-pdf-pages-")
                .tempdir()
                .map_err(|e| ExtractProblem::Unreadable(format!("no temporary directory: {e}")))?,
        ),
        None => None,
    };
    let images = match (&options.ocr, &scratch) {
        (Some(ocr), Some(dir)) => Some(Images {
            dpi: ocr.dpi,
            dir: dir.path().to_path_buf(),
        }),
        _ => None,
    };
    let mut out = Stream {
        sink,
        ocr: options.ocr.as_ref(),
        deadline,
        pages: 0,
        done: 0,
        text: PdfText::default(),
        image_only: Vec::new(),
        scans: Vec::new(),
        unreadable: Vec::new(),
    };
    let source = Source::Path(path);
    let warnings = match isolate::helper() {
        Some(helper) => {
            let pool = isolate::shared(&helper);
            let password = options.password.as_deref();
            match pool.read_with(source, password, images, deadline, &mut out)? {
                isolate::Read::Done(warnings) => warnings,
                isolate::Read::TimedOut => {
                    return Err(ExtractProblem::TimedOut {
                        seconds: options.time_limit.as_secs(),
                        done: out.done,
                        pages: out.pages,
                    })
                }
            }
        }
        None => super::in_process(source, options, images.as_ref(), &mut out)?,
    };
    out.finish(warnings)
}

/// Delivers pages to the sink as they come, OCRing those without text when asked.
struct Stream<'s, 'o> {
    sink: &'s mut PageSink<'o>,
    ocr: Option<&'s ocr::OcrOptions>,
    deadline: Instant,
    pages: u32,
    done: u32,
    /// Summary (its `text` stays empty).
    text: PdfText,
    image_only: Vec<u32>,
    scans: Vec<u32>,
    unreadable: Vec<u32>,
}

impl Stream<'_, '_> {
    /// Hands page `n` to the sink: its layout's blocks, or its text as paragraphs when the
    /// layout found none or the text came from OCR.
    fn deliver(&mut self, n: u32, text: &str, blocks: Vec<Block>) -> Result<(), ExtractProblem> {
        let blocks = if blocks.is_empty() {
            paragraphs(text)
        } else {
            blocks
        };
        if blocks.is_empty() {
            return Ok(());
        }
        self.text.pages_with_text.push(n);
        (self.sink)(Page {
            number: Some(n),
            blocks,
        })
    }

    /// OCR of page `n` from the helper's `image`: `Ok(None)` when Tesseract found no text.
    fn ocr(
        &mut self,
        n: u32,
        image: Option<Image>,
        options: &ocr::OcrOptions,
    ) -> Result<Option<ocr::PageText>, ExtractProblem> {
        let render = |to: &Path| match image {
            Some(Image::Path(from)) => std::fs::rename(&from, to)
                .map_err(|e| format!("the drawn page {} could not be moved: {e}", from.display())),
            Some(Image::Failed(why)) => Err(why),
            None => Err("the page was not drawn for OCR".to_string()),
        };
        ocr::page(render, n, options, self.deadline, self.pages)
    }

    fn finish(self, mut warnings: Vec<String>) -> Result<PdfText, ExtractProblem> {
        let mut text = self.text;
        text.pages = self.pages;
        if text.pages_with_text.is_empty() {
            return Err(nothing(self.pages, &self.image_only, &self.unreadable));
        }
        warnings.extend(page_warnings(
            &self.image_only,
            &self.scans,
            &self.unreadable,
        ));
        text.warnings = warnings;
        Ok(text)
    }
}

impl PageOut for Stream<'_, '_> {
    fn open(&mut self, pages: u32) -> Result<(), ExtractProblem> {
        if pages == 0 {
            return Err(ExtractProblem::Corrupt {
                format: "PDF",
                detail: "the document has no pages".into(),
            });
        }
        self.pages = pages;
        Ok(())
    }

    fn page(
        &mut self,
        n: u32,
        outcome: PageOutcome,
        image: Option<Image>,
    ) -> Result<(), ExtractProblem> {
        self.done = self.done.max(n);
        match (outcome, self.ocr) {
            (PageOutcome::Text(text, blocks), _) => self.deliver(n, &text, blocks),
            (PageOutcome::ScanWithText(text, blocks), None) => {
                self.scans.push(n);
                self.deliver(n, &text, blocks)
            }
            (PageOutcome::ScanWithText(text, blocks), Some(options)) => {
                // The text layer stays unless OCR reads more.
                match self.ocr(n, image, options)? {
                    Some(found) if letters(&found.text) > letters(&text) => {
                        self.text.ocr.add(n, &found);
                        self.deliver(n, &found.text, Vec::new())
                    }
                    _ => self.deliver(n, &text, blocks),
                }
            }
            (PageOutcome::ImageOnly, None) => {
                self.image_only.push(n);
                Ok(())
            }
            (PageOutcome::ImageOnly, Some(options)) => match self.ocr(n, image, options)? {
                Some(found) => {
                    self.text.ocr.add(n, &found);
                    self.deliver(n, &found.text, Vec::new())
                }
                None => {
                    self.image_only.push(n);
                    Ok(())
                }
            },
            (PageOutcome::Blank, _) => Ok(()),
            (PageOutcome::Unreadable, _) => {
                self.unreadable.push(n);
                Ok(())
            }
        }
    }
}
