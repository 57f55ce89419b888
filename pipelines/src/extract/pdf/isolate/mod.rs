//! PDF extraction in warm child processes (`mindora-pdf`), killed at the document's time limit.
//!
//! Why: PDFium is C++ reading hostile input. In a child, a page that makes it loop is stopped
//! mid-page at the deadline (an in-process check can only run between pages), a crash fails the
//! one document with a clear reason instead of taking the worker down, memory is capped with
//! `RLIMIT_AS`, and documents run in parallel (one PDFium per process, no shared lock).
//!
//! The children are kept warm in a [`Pool`] (see [`pool`]): each serves many documents with
//! PDFium and its fonts loaded, and is replaced after a number of documents, on memory growth,
//! on a crash or at a deadline. The lines they speak are in [`protocol`]. The helper is found
//! through `MINDORA_PDF_HELPER` (a path, or `off` to stay in-process), else next to the running
//! executable (or one level up, for test binaries under `target/*/deps`).

pub mod pool;
pub mod protocol;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

pub use pool::{Ended, Pool, PoolConfig, PoolStats};
pub use protocol::{serve, Image, Images, Msg, RenderRequest, Request};

use super::pages::PageOutcome;
use crate::error::ExtractProblem;
use crate::extract::ExtractOptions;

/// Environment variable naming the helper binary, or `off` for in-process extraction.
pub const HELPER_ENV: &str = "MINDORA_PDF_HELPER";
/// Environment variable with the child's address-space cap in MiB (default 4096; 0 = none).
pub const MEMORY_ENV: &str = "MINDORA_PDF_MEMORY_MB";
/// The helper binary's file name.
pub const HELPER_NAME: &str = "mindora-pdf";

/// The helper binary and the limits it runs under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Helper {
    /// Path of the `mindora-pdf` binary (or a stand-in, in tests).
    pub path: PathBuf,
    /// Address-space cap of the child in MiB; 0 for none.
    pub memory_mb: u64,
}

/// Where the PDF is: in memory (sent down the pipe), or a file the helper maps itself.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The file's bytes.
    Bytes(&'a [u8]),
    /// The file's path.
    Path(&'a Path),
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

/// The process-wide pool of `helper` (one per binary and cap), sized from the environment
/// ([`PoolConfig::from_env`]) when first used.
pub fn shared(helper: &Helper) -> Arc<Pool> {
    static POOLS: OnceLock<Mutex<HashMap<Helper, Arc<Pool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        pools
            .entry(helper.clone())
            .or_insert_with(|| Arc::new(Pool::new(helper.clone(), PoolConfig::from_env()))),
    )
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

/// Receives a document's pages, in page order, from a helper or the in-process walk.
pub trait PageOut {
    /// The document opened with `pages` pages.
    fn open(&mut self, pages: u32) -> Result<(), ExtractProblem>;
    /// Page `n` (1-based) gave `outcome`, and `image` when pages were drawn for OCR (see
    /// [`Images`]); an error stops the document.
    fn page(
        &mut self,
        n: u32,
        outcome: PageOutcome,
        image: Option<Image>,
    ) -> Result<(), ExtractProblem>;
}

/// How reading a document ended, when it did not fail.
#[derive(Debug)]
pub enum Read {
    /// Every page was read; the file's structure warnings (damage repaired).
    Done(Vec<String>),
    /// The deadline came first (the helper was killed, or no helper was free).
    TimedOut,
}

impl Pool {
    /// Reads every page of `source` in a helper of this pool, feeding them to `out`, until
    /// `deadline`.
    pub fn read(
        &self,
        source: Source<'_>,
        password: Option<&str>,
        deadline: Instant,
        out: &mut dyn PageOut,
    ) -> Result<Read, ExtractProblem> {
        self.read_with(source, password, None, deadline, out)
    }

    /// Like [`Pool::read`], drawing the pages without (much) text for OCR as it goes.
    pub fn read_with(
        &self,
        source: Source<'_>,
        password: Option<&str>,
        images: Option<Images>,
        deadline: Instant,
        out: &mut dyn PageOut,
    ) -> Result<Read, ExtractProblem> {
        let mut request = protocol::request(source, password, None);
        request.images = images;
        let mut warnings = Vec::new();
        let ended = self.converse(&request, bytes_of(source), deadline, |msg| match msg {
            Msg::Open { pages } => out.open(pages),
            Msg::Failed { kind, detail } => Err(protocol::decode(&kind, detail)),
            Msg::Done { warnings: w } => {
                warnings = w;
                Ok(())
            }
            Msg::Rendered => Err(failed("the helper rendered a page nobody asked for")),
            page => match page.into_page() {
                Some((n, outcome, image)) => out.page(n, outcome, image),
                None => Err(failed("the helper sent an unknown message")),
            },
        })?;
        Ok(match ended {
            Ended::Finished => Read::Done(warnings),
            Ended::TimedOut => Read::TimedOut,
        })
    }

    /// Renders a page of `source` into `page.path` in a helper of this pool (PDFium's renderer
    /// is as exposed to hostile input as its text layer), killed at `deadline`. The error is
    /// the reason.
    pub fn render(
        &self,
        source: Source<'_>,
        password: Option<&str>,
        page: RenderRequest,
        deadline: Instant,
    ) -> Result<(), String> {
        let request = protocol::request(source, password, Some(page));
        let ended = self
            .converse(&request, bytes_of(source), deadline, |msg| match msg {
                Msg::Rendered => Ok(()),
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
}

fn bytes_of(source: Source<'_>) -> Option<&[u8]> {
    match source {
        Source::Bytes(b) => Some(b),
        Source::Path(_) => None,
    }
}

/// Reads `bytes` in a helper of `helper`'s shared pool into `out`; the error of a document
/// stopped at `options.time_limit` is [`ExtractProblem::TimedOut`].
pub fn run(
    helper: &Helper,
    bytes: &[u8],
    options: &ExtractOptions,
    out: &mut super::Collect,
) -> Result<Vec<String>, ExtractProblem> {
    let deadline = Instant::now() + options.time_limit;
    match shared(helper).read(
        Source::Bytes(bytes),
        options.password.as_deref(),
        deadline,
        out,
    )? {
        Read::Done(warnings) => Ok(warnings),
        Read::TimedOut => Err(out.timed_out(options)),
    }
}

/// Renders page `page` of `bytes` in a helper of `helper`'s shared pool (see [`Pool::render`]).
pub fn render(
    helper: &Helper,
    bytes: &[u8],
    password: Option<&str>,
    page: RenderRequest,
    deadline: Instant,
) -> Result<(), String> {
    shared(helper).render(Source::Bytes(bytes), password, page, deadline)
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
