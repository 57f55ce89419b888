//! The lines between the worker and a `mindora-pdf` helper, and the helper's side of them.
//!
//! Per document the parent writes one JSON [`Request`] line, followed by the PDF's bytes unless
//! the request names a file (`path`), which the helper then maps itself. The helper answers
//! with one JSON [`Msg`] line per event, flushed per page, and ends every request with exactly
//! one terminal message ([`Msg::is_last`]: `done`, `failed` or `rendered`); then it waits for
//! the next request, PDFium and its fonts still loaded. End of input ends the helper.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use pdfium_render::prelude::PdfiumLibraryBindingsAccessor;
use serde::{Deserialize, Serialize};

use super::super::mapped::Mapped;
use super::super::pages::{Document, PageOutcome};
use super::super::{damage, engine};
use crate::document::Block;
use crate::error::ExtractProblem;

/// What the parent sends before the bytes (if any).
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The job's password, if any.
    pub password: Option<String>,
    /// Length of the PDF that follows the line (0 when `path` is given).
    pub bytes: u64,
    /// The PDF's file, read by the helper in place of bytes on stdin.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Render one page to an image for OCR instead of reading the text.
    #[serde(default)]
    pub render: Option<RenderRequest>,
    /// While reading, draw each page without (much) text for OCR (streaming extraction: the
    /// image is ready when the page arrives, and no second helper is needed).
    #[serde(default)]
    pub images: Option<Images>,
}

/// Where and how pages for OCR are drawn during a read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Images {
    /// Resolution asked for.
    pub dpi: u32,
    /// Directory the images go to (`p<n>.pgm`); the parent owns and removes it.
    pub dir: PathBuf,
}

/// A page drawn for OCR during a read, or why it could not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Image {
    /// The image file.
    Path(PathBuf),
    /// Why there is none.
    Failed(String),
}

/// One page to draw into an image file (see [`crate::extract::ocr::render`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct RenderRequest {
    /// 1-based page number.
    pub page: u32,
    /// Resolution asked for.
    pub dpi: u32,
    /// Where the image goes.
    pub path: PathBuf,
}

/// One line from the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Msg {
    /// The document opened.
    Open {
        /// Page count.
        pages: u32,
    },
    /// A page with text.
    Text {
        /// 1-based page number.
        n: u32,
        /// Its text.
        text: String,
        /// Its blocks (headings, paragraphs, lists, tables).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        blocks: Vec<Block>,
    },
    /// A scan with a little text (see [`PageOutcome::ScanWithText`]).
    ScanText {
        /// 1-based page number.
        n: u32,
        /// Its text.
        text: String,
        /// Its blocks.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        blocks: Vec<Block>,
        /// The page drawn for OCR, when the request asked for [`Images`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<Image>,
    },
    /// A page that is images only.
    ImageOnly {
        /// 1-based page number.
        n: u32,
        /// The page drawn for OCR, when the request asked for [`Images`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<Image>,
    },
    /// A page with nothing on it.
    Blank {
        /// 1-based page number.
        n: u32,
    },
    /// A page PDFium could not load.
    Unreadable {
        /// 1-based page number.
        n: u32,
    },
    /// The document could not be read at all.
    Failed {
        /// Machine class of the problem.
        kind: String,
        /// Its detail.
        detail: String,
    },
    /// Every page was read.
    Done {
        /// What the file's structure says (damage repaired), see `damage::check`.
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// The page asked for was rendered.
    Rendered,
}

impl Msg {
    /// Whether this message ends its request (the helper is then ready for the next one).
    pub fn is_last(&self) -> bool {
        matches!(self, Msg::Failed { .. } | Msg::Done { .. } | Msg::Rendered)
    }

    /// The message for page `n`'s outcome (and its image for OCR).
    pub fn page(n: u32, outcome: PageOutcome, image: Option<Image>) -> Msg {
        match outcome {
            PageOutcome::Text(text, blocks) => Msg::Text { n, text, blocks },
            PageOutcome::ScanWithText(text, blocks) => Msg::ScanText {
                n,
                text,
                blocks,
                image,
            },
            PageOutcome::ImageOnly => Msg::ImageOnly { n, image },
            PageOutcome::Blank => Msg::Blank { n },
            PageOutcome::Unreadable => Msg::Unreadable { n },
        }
    }

    /// Page number, outcome and image for OCR, for a page message.
    pub fn into_page(self) -> Option<(u32, PageOutcome, Option<Image>)> {
        Some(match self {
            Msg::Text { n, text, blocks } => (n, PageOutcome::Text(text, blocks), None),
            Msg::ScanText {
                n,
                text,
                blocks,
                image,
            } => (n, PageOutcome::ScanWithText(text, blocks), image),
            Msg::ImageOnly { n, image } => (n, PageOutcome::ImageOnly, image),
            Msg::Blank { n } => (n, PageOutcome::Blank, None),
            Msg::Unreadable { n } => (n, PageOutcome::Unreadable, None),
            _ => return None,
        })
    }

    /// The failure message for `p`.
    pub fn failed(p: &ExtractProblem) -> Msg {
        let (kind, detail) = encode(p);
        Msg::Failed {
            kind: kind.into(),
            detail,
        }
    }
}

fn encode(p: &ExtractProblem) -> (&'static str, String) {
    match p {
        ExtractProblem::PasswordNeeded(_) => ("password_needed", String::new()),
        ExtractProblem::WrongPassword(_) => ("wrong_password", String::new()),
        ExtractProblem::Unsupported(d) => ("unsupported", d.clone()),
        ExtractProblem::EngineUnavailable(d) => ("engine_unavailable", d.clone()),
        ExtractProblem::Corrupt { detail, .. } => ("corrupt", detail.clone()),
        other => ("other", other.to_string()),
    }
}

/// The problem a [`Msg::Failed`] stands for.
pub fn decode(kind: &str, detail: String) -> ExtractProblem {
    match kind {
        "password_needed" => ExtractProblem::PasswordNeeded("PDF"),
        "wrong_password" => ExtractProblem::WrongPassword("PDF"),
        "unsupported" => ExtractProblem::Unsupported(detail),
        "engine_unavailable" => ExtractProblem::EngineUnavailable(detail),
        "corrupt" => ExtractProblem::Corrupt {
            format: "PDF",
            detail,
        },
        _ => ExtractProblem::EngineFailed(detail),
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// The helper's side: serves [`Request`]s from `input` until it ends, writing [`Msg`] lines to
/// `output`. Returns an error only when the parent is gone or sent garbage.
pub fn serve(mut input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let request: Request = serde_json::from_str(&line).map_err(invalid)?;
        let mut send = |msg: &Msg| -> std::io::Result<()> {
            serde_json::to_writer(&mut output, msg)?;
            output.write_all(b"\n")?;
            output.flush()
        };
        match &request.path {
            Some(path) => match Mapped::open(path) {
                Ok(map) => one(&request, map.bytes(), &mut send)?,
                Err(e) => send(&Msg::Failed {
                    kind: "other".into(),
                    detail: format!("the PDF helper could not open {}: {e}", path.display()),
                })?,
            },
            None => {
                let len = usize::try_from(request.bytes).map_err(invalid)?;
                let mut bytes = vec![0u8; len];
                input.read_exact(&mut bytes)?;
                one(&request, &bytes, &mut send)?;
            }
        }
    }
}

/// Answers one request about `bytes`.
fn one(
    request: &Request,
    bytes: &[u8],
    send: &mut impl FnMut(&Msg) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let password = request.password.as_deref();
    if let Some(page) = &request.render {
        return send(&match render_page(bytes, password, page) {
            Ok(()) => Msg::Rendered,
            Err(detail) => Msg::Failed {
                kind: "render".into(),
                detail,
            },
        });
    }
    let opened = engine::pdfium().and_then(|p| Document::open(p.bindings(), bytes, password));
    let doc = match opened {
        Ok(doc) => doc,
        Err(p) => return send(&Msg::failed(&p)),
    };
    send(&Msg::Open { pages: doc.pages() })?;
    // Opened on the first page to draw: pdfium-render's renderer wants its own handle.
    let mut drawer = None;
    for index in 0..doc.pages() {
        let n = index + 1;
        let outcome = doc.page(index);
        let image = match (&request.images, &outcome) {
            (Some(images), PageOutcome::ImageOnly | PageOutcome::ScanWithText(..)) => {
                Some(draw(&mut drawer, bytes, password, n, images))
            }
            _ => None,
        };
        send(&Msg::page(n, outcome, image))?;
    }
    drop(drawer);
    drop(doc);
    send(&Msg::Done {
        warnings: damage::check(bytes),
    })
}

pub(crate) type Drawer<'a> = Option<Result<pdfium_render::prelude::PdfDocument<'a>, String>>;

/// Draws page `n` into `images.dir` during a read, opening `drawer` the first time.
pub(crate) fn draw<'a>(
    drawer: &mut Drawer<'a>,
    bytes: &'a [u8],
    password: Option<&str>,
    n: u32,
    images: &Images,
) -> Image {
    let doc = drawer.get_or_insert_with(|| {
        engine::pdfium()
            .map_err(|e| e.to_string())?
            .load_pdf_from_byte_slice(bytes, password)
            .map_err(|e| format!("PDFium could not open it again to render a page: {e}"))
    });
    let drawn = doc.as_ref().map_err(Clone::clone).and_then(|doc| {
        let index = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let page = doc
            .pages()
            .get(index)
            .map_err(|e| format!("PDFium could not load the page to render it: {e}"))?;
        let path = images.dir.join(format!("p{n}.pgm"));
        crate::extract::ocr::render(&page, images.dpi, &path).map(|()| path)
    });
    match drawn {
        Ok(path) => Image::Path(path),
        Err(e) => Image::Failed(e),
    }
}

/// Draws one page of `bytes` for OCR (in the helper, or in-process without one).
pub fn render_page(
    bytes: &[u8],
    password: Option<&str>,
    request: &RenderRequest,
) -> Result<(), String> {
    let doc = engine::pdfium()
        .map_err(|e| e.to_string())?
        .load_pdf_from_byte_slice(bytes, password)
        .map_err(|e| format!("PDFium could not open it again to render a page: {e}"))?;
    let index = i32::try_from(request.page.saturating_sub(1)).unwrap_or(i32::MAX);
    let page = doc
        .pages()
        .get(index)
        .map_err(|e| format!("PDFium could not load the page to render it: {e}"))?;
    crate::extract::ocr::render(&page, request.dpi, &request.path)
}

/// The request line for reading (or, with `render`, drawing a page of) a document.
pub fn request(
    source: super::Source<'_>,
    password: Option<&str>,
    render: Option<RenderRequest>,
) -> Request {
    let (bytes, path) = match source {
        super::Source::Bytes(b) => (b.len() as u64, None),
        super::Source::Path(p) => (0, Some(Path::to_path_buf(p))),
    };
    Request {
        password: password.map(str::to_string),
        bytes,
        path,
        render,
        images: None,
    }
}
