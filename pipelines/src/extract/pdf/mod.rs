//! PDF text through PDFium (see [`engine`] for why and how it is loaded).
//!
//! Each document is read in a warm child process (`mindora-pdf`, kept in a pool and reused
//! across documents, see [`isolate`]) that is killed at the time limit, so one pathological page cannot hold a job past it, a PDFium crash fails only
//! that document, the child's memory is capped, and documents are read in parallel (PDFium
//! itself is serialised per process). Without the helper binary (a library user who did not
//! install it, or `MINDORA_PDF_HELPER=off`) the same page walk runs in-process, with the time
//! limit checked between pages.
//!
//! Pages are read one at a time (each closed before the next), so memory stays at the file
//! plus one page plus the text, whatever the page count. Failures say what is wrong: a password
//! is needed or wrong, no text layer (scans), damaged structure (text kept, with a warning),
//! or a file PDFium cannot open at all.

mod damage;
pub mod engine;
pub mod isolate;
pub mod layout;
pub mod mapped;
pub mod pages;
mod stream;

use std::path::Path;
use std::time::Instant;

use pdfium_render::prelude::PdfiumLibraryBindingsAccessor;

use super::ExtractOptions;
use crate::error::ExtractProblem;
use isolate::{PageOut, Source};
use mapped::Mapped;
use pages::PageOutcome;
pub use stream::extract_blocks;

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
    /// The pages with text as blocks, in page order (OCR'd pages as paragraphs).
    pub blocks: Vec<crate::document::Page>,
}

/// Extracts the text of every page of `bytes`.
pub fn extract(bytes: &[u8], options: &ExtractOptions) -> Result<PdfText, ExtractProblem> {
    extract_from(Source::Bytes(bytes), options)
}

/// Extracts the text of every page of the file at `path` (the helper maps the file itself: the
/// bytes are neither held here nor sent down a pipe).
pub fn extract_file(path: &Path, options: &ExtractOptions) -> Result<PdfText, ExtractProblem> {
    extract_from(Source::Path(path), options)
}

fn extract_from(source: Source<'_>, options: &ExtractOptions) -> Result<PdfText, ExtractProblem> {
    let deadline = Instant::now() + options.time_limit;
    let mut pages = Collect::default();
    let pool = isolate::helper().map(|h| isolate::shared(&h));
    let password = options.password.as_deref();
    let warnings = match &pool {
        Some(pool) => match pool.read(source, password, deadline, &mut pages)? {
            isolate::Read::Done(warnings) => warnings,
            isolate::Read::TimedOut => return Err(pages.timed_out(options)),
        },
        None => in_process(source, options, None, &mut pages)?,
    };
    if let Some(ocr) = &options.ocr {
        pages.ocr(pool.as_deref(), source, options, ocr, deadline)?;
    }
    pages.finish(warnings)
}

/// True when the file at `path` starts like a PDF (`%PDF-` within its first KiB, as readers
/// accept), read without loading the rest.
pub fn is_pdf_file(path: &std::path::Path) -> Result<bool, ExtractProblem> {
    use std::io::Read;
    let mut head = Vec::with_capacity(1024);
    std::fs::File::open(path)
        .and_then(|f| f.take(1024).read_to_end(&mut head))
        .map_err(|e| ExtractProblem::Unreadable(e.to_string()))?;
    Ok(head.windows(5).any(|w| w == b"%PDF-"))
}

/// A file's bytes, mapped when it is a path (for the in-process engine).
pub(crate) enum Held<'a> {
    Bytes(&'a [u8]),
    Mapped(Mapped),
}

impl<'a> Held<'a> {
    pub(crate) fn new(source: Source<'a>) -> Result<Self, ExtractProblem> {
        Ok(match source {
            Source::Bytes(b) => Held::Bytes(b),
            Source::Path(p) => Held::Mapped(Mapped::open(p).map_err(|e| {
                ExtractProblem::EngineFailed(format!("could not open {}: {e}", p.display()))
            })?),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Held::Bytes(b) => b,
            Held::Mapped(m) => m.bytes(),
        }
    }
}

/// The page walk in this process: the time limit is checked between pages only. Returns the
/// file's structure warnings.
pub fn in_process(
    source: Source<'_>,
    options: &ExtractOptions,
    images: Option<&isolate::Images>,
    out: &mut dyn PageOut,
) -> Result<Vec<String>, ExtractProblem> {
    let started = Instant::now();
    let held = Held::new(source)?;
    let bytes = held.bytes();
    let pdfium = engine::pdfium()?;
    let password = options.password.as_deref();
    let doc = pages::Document::open(pdfium.bindings(), bytes, password)?;
    out.open(doc.pages())?;
    let mut drawer = None;
    for index in 0..doc.pages() {
        if started.elapsed() > options.time_limit {
            return Err(ExtractProblem::TimedOut {
                seconds: options.time_limit.as_secs(),
                done: index,
                pages: doc.pages(),
            });
        }
        let n = index + 1;
        let outcome = doc.page(index);
        let image = match (images, &outcome) {
            (Some(images), PageOutcome::ImageOnly | PageOutcome::ScanWithText(..)) => Some(
                isolate::protocol::draw(&mut drawer, bytes, password, n, images),
            ),
            _ => None,
        };
        out.page(n, outcome, image)?;
    }
    drop(drawer);
    drop(doc);
    Ok(damage::check(bytes))
}

/// Gathers page outcomes (from this process or the child) into a [`PdfText`].
#[derive(Debug, Default)]
pub struct Collect {
    out: PdfText,
    /// (page number, text), in page order once finished.
    texts: Vec<(u32, String)>,
    done: u32,
    image_only: Vec<u32>,
    /// Scans with a little text: kept as text, OCR'd too when asked for.
    scans: Vec<u32>,
    unreadable: Vec<u32>,
    /// (page number, blocks) of the pages with text.
    blocks: Vec<(u32, Vec<crate::document::Block>)>,
}

impl Collect {
    /// The document opened with `pages` pages.
    pub fn open(&mut self, pages: u32) -> Result<(), ExtractProblem> {
        if pages == 0 {
            return Err(ExtractProblem::Corrupt {
                format: "PDF",
                detail: "the document has no pages".into(),
            });
        }
        self.out.pages = pages;
        Ok(())
    }

    /// Page `number` (1-based) gave `outcome`.
    pub fn page(&mut self, number: u32, outcome: PageOutcome) {
        self.done = self.done.max(number);
        match outcome {
            PageOutcome::Text(text, blocks) => {
                self.texts.push((number, text));
                self.blocks.push((number, blocks));
            }
            PageOutcome::ScanWithText(text, blocks) => {
                self.texts.push((number, text));
                self.blocks.push((number, blocks));
                self.scans.push(number);
            }
            PageOutcome::ImageOnly => self.image_only.push(number),
            PageOutcome::Blank => {}
            PageOutcome::Unreadable => self.unreadable.push(number),
        }
    }

    /// The error for a document stopped at the time limit.
    pub fn timed_out(&self, options: &ExtractOptions) -> ExtractProblem {
        ExtractProblem::TimedOut {
            seconds: options.time_limit.as_secs(),
            done: self.done,
            pages: self.out.pages,
        }
    }

    /// OCRs the image-only pages and the scans with a little text (the job asked for it, see
    /// [`super::ocr`]), one at a time: each is rendered by a helper process (in this process
    /// without one) and read by a Tesseract child killed at its limits. A scan keeps its text
    /// layer unless OCR reads more.
    fn ocr(
        &mut self,
        pool: Option<&isolate::Pool>,
        source: Source<'_>,
        options: &ExtractOptions,
        ocr: &super::ocr::OcrOptions,
        deadline: Instant,
    ) -> Result<(), ExtractProblem> {
        if self.image_only.is_empty() && self.scans.is_empty() {
            return Ok(());
        }
        let password = options.password.as_deref();
        let held;
        let renderer = match pool {
            Some(pool) => Renderer::Helper(pool, source),
            None => {
                held = Held::new(source)?;
                Renderer::InProcess(Box::new(
                    engine::pdfium()?
                        .load_pdf_from_byte_slice(held.bytes(), password)
                        .map_err(|e| ExtractProblem::Corrupt {
                            format: "PDF",
                            detail: format!("PDFium could not open it again to render pages: {e}"),
                        })?,
                ))
            }
        };
        let mut still_images = Vec::new();
        let scans = std::mem::take(&mut self.scans);
        let mut pages: Vec<u32> = std::mem::take(&mut self.image_only);
        pages.extend(&scans);
        pages.sort_unstable();
        for number in pages {
            let render = |path: &std::path::Path| match &renderer {
                Renderer::Helper(pool, source) => {
                    let page = isolate::RenderRequest {
                        page: number,
                        dpi: ocr.dpi,
                        path: path.to_path_buf(),
                    };
                    pool.render(*source, password, page, deadline)
                }
                Renderer::InProcess(doc) => {
                    let index = i32::try_from(number - 1).unwrap_or(i32::MAX);
                    let page = doc
                        .pages()
                        .get(index)
                        .map_err(|e| format!("PDFium could not load the page: {e}"))?;
                    super::ocr::render(&page, ocr.dpi, path)
                }
            };
            let found = super::ocr::page(render, number, ocr, deadline, self.out.pages)?;
            if scans.contains(&number) {
                let layer = self.texts.iter_mut().find(|(n, _)| *n == number);
                if let (Some(found), Some((_, text))) = (found, layer) {
                    if letters(&found.text) > letters(text) {
                        self.out.ocr.add(number, &found);
                        *text = found.text;
                    }
                }
                continue;
            }
            match found {
                Some(found) => {
                    self.out.ocr.add(number, &found);
                    self.texts.push((number, found.text));
                }
                None => still_images.push(number),
            }
        }
        self.image_only = still_images;
        Ok(())
    }

    fn finish(self, mut warnings: Vec<String>) -> Result<PdfText, ExtractProblem> {
        let Collect {
            mut out,
            mut texts,
            image_only,
            scans,
            unreadable,
            blocks,
            ..
        } = self;
        texts.sort_by_key(|(number, _)| *number);
        let mut blocks: std::collections::HashMap<u32, Vec<crate::document::Block>> =
            blocks.into_iter().collect();
        for (number, text) in texts {
            // OCR'd pages (and pages the layout found nothing in) as paragraphs of their text.
            let page_blocks = match blocks.remove(&number) {
                Some(b) if !b.is_empty() && !out.ocr.pages.contains(&number) => b,
                _ => crate::document::paragraphs(&text),
            };
            out.blocks.push(crate::document::Page {
                number: Some(number),
                blocks: page_blocks,
            });
            out.pages_with_text.push(number);
            out.text.push_str(&text);
            out.text.push_str("\n\n");
        }
        if out.pages_with_text.is_empty() {
            return Err(nothing(out.pages, &image_only, &unreadable));
        }
        warnings.extend(page_warnings(&image_only, &scans, &unreadable));
        out.warnings = warnings;
        Ok(out)
    }
}

/// The problem of a document none of whose pages had text.
fn nothing(pages: u32, image_only: &[u32], unreadable: &[u32]) -> ExtractProblem {
    if !image_only.is_empty() {
        ExtractProblem::NoTextLayer { pages }
    } else if unreadable.len() as u32 == pages {
        ExtractProblem::Corrupt {
            format: "PDF",
            detail: "no page could be read".into(),
        }
    } else {
        ExtractProblem::Empty
    }
}

/// What the user should know about pages without text.
fn page_warnings(image_only: &[u32], scans: &[u32], unreadable: &[u32]) -> Vec<String> {
    let mut warnings = Vec::new();
    if !image_only.is_empty() {
        warnings.push(format!(
            "page(s) {} have no text layer (images only); OCR needed for their text",
            ranges(image_only)
        ));
    }
    if !scans.is_empty() {
        warnings.push(format!(
            "page(s) {} look like scans with only a little text; OCR would read the rest",
            ranges(scans)
        ));
    }
    if !unreadable.is_empty() {
        warnings.push(format!("page(s) {} could not be read", ranges(unreadable)));
    }
    warnings
}

impl PageOut for Collect {
    fn open(&mut self, pages: u32) -> Result<(), ExtractProblem> {
        Collect::open(self, pages)
    }

    fn page(
        &mut self,
        n: u32,
        outcome: PageOutcome,
        _image: Option<isolate::Image>,
    ) -> Result<(), ExtractProblem> {
        Collect::page(self, n, outcome);
        Ok(())
    }
}

/// Where pages are drawn for OCR: a warm helper per page, or this process without one.
enum Renderer<'a> {
    Helper(&'a isolate::Pool, Source<'a>),
    InProcess(Box<pdfium_render::prelude::PdfDocument<'a>>),
}

/// Non-space characters: how much text a page carries.
fn letters(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
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
