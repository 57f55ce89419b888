//! PDF extraction in a child process (`mindora-pdf`), killed at the document's time limit.
//!
//! Why: PDFium is C++ reading hostile input. In a child, a page that makes it loop is stopped
//! mid-page at the deadline (an in-process check can only run between pages), a crash fails the
//! one document with a clear reason instead of taking the worker down, memory is capped with
//! `RLIMIT_AS`, and documents run in parallel (one PDFium per process, no shared lock).
//!
//! Protocol (private to this module and the helper, which are built together): the parent
//! writes one JSON line [`Request`] and then the PDF's bytes to the child's stdin; the child
//! answers with one JSON line per [`Msg`] on stdout, flushed per page, so at the deadline the
//! parent knows how many pages were done. The helper is found through `MINDORA_PDF_HELPER`
//! (a path, or `off` to stay in-process), else next to the running executable (or one level
//! up, for test binaries under `target/*/deps`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pdfium_render::prelude::PdfiumLibraryBindingsAccessor;
use serde::{Deserialize, Serialize};

use super::pages::{Document, PageOutcome};
use super::{engine, Collect};
use crate::document::Block;
use crate::error::ExtractProblem;
use crate::extract::ExtractOptions;

/// Environment variable naming the helper binary, or `off` for in-process extraction.
pub const HELPER_ENV: &str = "MINDORA_PDF_HELPER";
/// Environment variable with the child's address-space cap in MiB (default 4096; 0 = none).
pub const MEMORY_ENV: &str = "MINDORA_PDF_MEMORY_MB";
/// The helper binary's file name.
pub const HELPER_NAME: &str = "mindora-pdf";

/// What the parent sends before the bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The job's password, if any.
    pub password: Option<String>,
    /// Length of the PDF that follows the line.
    pub bytes: u64,
    /// Render one page to an image for OCR instead of reading the text.
    #[serde(default)]
    pub render: Option<RenderRequest>,
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
        #[serde(default)]
        blocks: Vec<Block>,
    },
    /// A scan with a little text (see [`PageOutcome::ScanWithText`]).
    ScanText {
        /// 1-based page number.
        n: u32,
        /// Its text.
        text: String,
        /// Its blocks.
        #[serde(default)]
        blocks: Vec<Block>,
    },
    /// A page that is images only.
    ImageOnly {
        /// 1-based page number.
        n: u32,
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
    Done,
    /// The page asked for was rendered.
    Rendered,
}

/// The helper binary and the limits it runs under.
#[derive(Debug, Clone)]
pub struct Helper {
    /// Path of the `mindora-pdf` binary (or a stand-in, in tests).
    pub path: PathBuf,
    /// Address-space cap of the child in MiB; 0 for none.
    pub memory_mb: u64,
}

/// The helper to run, if there is one (see the module doc for where it is looked for).
pub fn helper() -> Option<Helper> {
    let path = match std::env::var_os(HELPER_ENV).filter(|v| !v.is_empty()) {
        Some(v) if v == "off" => return None,
        Some(v) => PathBuf::from(v),
        None => {
            let exe = std::env::current_exe().ok()?;
            let dir = exe.parent()?.to_path_buf();
            let up = dir.parent().map(|d| d.join(HELPER_NAME));
            [Some(dir.join(HELPER_NAME)), up]
                .into_iter()
                .flatten()
                .find(|p| p.is_file())?
        }
    };
    Some(Helper {
        path,
        memory_mb: memory_mb(),
    })
}

fn memory_mb() -> u64 {
    std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

fn failed(detail: impl Into<String>) -> ExtractProblem {
    ExtractProblem::EngineFailed(detail.into())
}

/// Runs the helper on `bytes`, feeding its pages to `out`; kills it at `options.time_limit`.
pub fn run(
    helper: &Helper,
    bytes: &[u8],
    options: &ExtractOptions,
    out: &mut Collect,
) -> Result<(), ExtractProblem> {
    let request = Request {
        password: options.password.clone(),
        bytes: bytes.len() as u64,
        render: None,
    };
    let deadline = Instant::now() + options.time_limit;
    let ended = converse(helper, &request, bytes, deadline, |msg| {
        match msg {
            Msg::Open { pages } => out.open(pages)?,
            Msg::Text { n, text, blocks } => out.page(n, PageOutcome::Text(text, blocks)),
            Msg::ScanText { n, text, blocks } => {
                out.page(n, PageOutcome::ScanWithText(text, blocks))
            }
            Msg::ImageOnly { n } => out.page(n, PageOutcome::ImageOnly),
            Msg::Blank { n } => out.page(n, PageOutcome::Blank),
            Msg::Unreadable { n } => out.page(n, PageOutcome::Unreadable),
            Msg::Failed { kind, detail } => return Err(decode(&kind, detail)),
            Msg::Done => return Ok(true),
            Msg::Rendered => return Err(failed("the helper rendered a page nobody asked for")),
        }
        Ok(false)
    })?;
    match ended {
        Ended::Finished => Ok(()),
        Ended::TimedOut => Err(out.timed_out(options)),
    }
}

/// Renders page `page` of `bytes` into `path` in a helper process (PDFium's renderer is as
/// exposed to hostile input as its text layer), killed at `deadline`. The error is the reason.
pub fn render(
    helper: &Helper,
    bytes: &[u8],
    password: Option<&str>,
    page: RenderRequest,
    deadline: Instant,
) -> Result<(), String> {
    let request = Request {
        password: password.map(str::to_string),
        bytes: bytes.len() as u64,
        render: Some(page),
    };
    let ended = converse(helper, &request, bytes, deadline, |msg| match msg {
        Msg::Rendered => Ok(true),
        Msg::Failed { detail, .. } => Err(failed(detail)),
        _ => Err(failed(
            "the helper answered a render request with page text",
        )),
    })
    .map_err(|e| match e {
        ExtractProblem::EngineFailed(detail) => detail,
        other => other.to_string(),
    })?;
    match ended {
        Ended::Finished => Ok(()),
        Ended::TimedOut => {
            Err("rendering the page did not end within the document's time limit".into())
        }
    }
}

/// How a conversation with the helper ended, when it did not fail.
enum Ended {
    /// `on_msg` saw the last message it expected.
    Finished,
    /// The deadline came first; the child was killed.
    TimedOut,
}

/// Starts the helper, sends `request` and `bytes`, and hands each answer to `on_msg` (which
/// says whether it was the last one, or what is wrong) until the child exits or `deadline`.
fn converse(
    helper: &Helper,
    request: &Request,
    bytes: &[u8],
    deadline: Instant,
    mut on_msg: impl FnMut(Msg) -> Result<bool, ExtractProblem>,
) -> Result<Ended, ExtractProblem> {
    let mut child = Command::new(&helper.path)
        .env(MEMORY_ENV, helper.memory_mb.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ExtractProblem::EngineUnavailable(format!(
                "the PDF helper {} could not be started: {e}",
                helper.path.display()
            ))
        })?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(failed("the PDF helper's pipes were not set up"));
    };
    let header = serde_json::to_string(request).map_err(|e| failed(format!("request: {e}")))?;
    std::thread::scope(|s| {
        // Write errors mean the child died; its exit status says why.
        s.spawn(move || {
            let _ = stdin
                .write_all(header.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.write_all(bytes));
        });
        let err_text = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.by_ref().take(8192).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&buf).trim().to_string()
        });
        let (tx, rx) = mpsc::channel();
        s.spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut finished = false;
        let mut problem = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(Ok(line)) => match serde_json::from_str::<Msg>(&line) {
                    Ok(msg) => match on_msg(msg) {
                        Ok(last) => finished |= last,
                        Err(p) => problem = Some(p),
                    },
                    Err(e) => problem = Some(failed(format!("bad line from the helper: {e}"))),
                },
                Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Ok(Ended::TimedOut);
                    }
                }
            }
        }
        let status = child.wait();
        let err_text = err_text.join().unwrap_or_default();
        if let Some(p) = problem {
            return Err(p);
        }
        if finished {
            return Ok(Ended::Finished);
        }
        Err(match status {
            Ok(status) => died(status, helper.memory_mb, &err_text),
            Err(e) => failed(format!("waiting for the PDF helper: {e}")),
        })
    })
}

fn died(status: ExitStatus, memory_mb: u64, stderr: &str) -> ExtractProblem {
    use std::os::unix::process::ExitStatusExt;
    let tail: String = stderr
        .lines()
        .last()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    let how = match status.signal() {
        Some(sig) => format!("it crashed (signal {sig})"),
        None => format!("it exited with {status}"),
    };
    failed(format!(
        "{how} while reading this file, or it went over its memory limit of {memory_mb} MiB ({MEMORY_ENV}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!("; it said: {tail}")
        }
    ))
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

fn decode(kind: &str, detail: String) -> ExtractProblem {
    match kind {
        "password_needed" => ExtractProblem::PasswordNeeded("PDF"),
        "wrong_password" => ExtractProblem::WrongPassword("PDF"),
        "unsupported" => ExtractProblem::Unsupported(detail),
        "engine_unavailable" => ExtractProblem::EngineUnavailable(detail),
        "corrupt" => ExtractProblem::Corrupt {
            format: "PDF",
            detail,
        },
        _ => failed(detail),
    }
}

/// The helper's side: reads a [`Request`] and the bytes from `input`, writes [`Msg`] lines to
/// `output`. Returns an error only when the parent is gone or sent garbage.
pub fn serve(mut input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let request: Request = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let len = usize::try_from(request.bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    let mut send = |msg: &Msg| -> std::io::Result<()> {
        serde_json::to_writer(&mut output, msg)?;
        output.write_all(b"\n")?;
        output.flush()
    };
    if let Some(page) = &request.render {
        return send(
            &match render_page(&bytes, request.password.as_deref(), page) {
                Ok(()) => Msg::Rendered,
                Err(detail) => Msg::Failed {
                    kind: "render".into(),
                    detail,
                },
            },
        );
    }
    let opened = engine::pdfium()
        .and_then(|pdfium| Document::open(pdfium.bindings(), &bytes, request.password.as_deref()));
    let doc = match opened {
        Ok(doc) => doc,
        Err(p) => {
            let (kind, detail) = encode(&p);
            return send(&Msg::Failed {
                kind: kind.into(),
                detail,
            });
        }
    };
    send(&Msg::Open { pages: doc.pages() })?;
    for index in 0..doc.pages() {
        let n = index + 1;
        send(&match doc.page(index) {
            PageOutcome::Text(text, blocks) => Msg::Text { n, text, blocks },
            PageOutcome::ScanWithText(text, blocks) => Msg::ScanText { n, text, blocks },
            PageOutcome::ImageOnly => Msg::ImageOnly { n },
            PageOutcome::Blank => Msg::Blank { n },
            PageOutcome::Unreadable => Msg::Unreadable { n },
        })?;
    }
    send(&Msg::Done)
}

/// The helper's side of [`render`].
fn render_page(
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

/// Caps this process's address space at `MINDORA_PDF_MEMORY_MB` (the helper calls it first).
pub fn cap_memory() -> std::io::Result<()> {
    let mb = memory_mb();
    if mb == 0 {
        return Ok(());
    }
    let bytes = mb.saturating_mul(1024 * 1024);
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct we pass; it changes only this process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
