//! OCR for PDF pages that are images only (scans, photographed receipts), off by default.
//!
//! A page without a text layer is rendered by PDFium to a grayscale image (300 DPI by default,
//! capped in pixels so a poster-sized page cannot take the worker's memory; in the PDF helper
//! process when there is one, so a page that crashes or hangs PDFium's renderer fails the
//! document, not the worker) and read by the
//! Tesseract command-line program (Debian `tesseract-ocr` and its `chi_sim`, `chi_tra`, `jpn`,
//! `eng` language packs). The program runs as a child process, not through a library binding:
//! a time limit is enforced by killing it, its memory is capped with `prlimit` (util-linux)
//! where present, and a crash in it fails one job instead of the worker. At most
//! `concurrency` tesseract processes run in one worker process at once, and one document OCRs
//! its pages one after another, so one job slot never runs more than one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pdfium_render::prelude::{PdfBitmapFormat, PdfPage, PdfRenderConfig};

use crate::error::ExtractProblem;

/// How to OCR one document's image-only pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrOptions {
    /// Tesseract language list, `+`-separated (`chi_sim+eng`).
    pub languages: String,
    /// Rendering resolution; 300 is what Tesseract is trained for.
    pub dpi: u32,
    /// Wall-time limit for one page; the document's own limit applies as well.
    pub page_timeout: Duration,
    /// Address-space limit of one tesseract process, in bytes (0: none).
    pub memory_bytes: u64,
    /// Tesseract processes running at once in this worker process, across all jobs.
    pub concurrency: usize,
    /// The tesseract program (a name looked up in `PATH`, or a path).
    pub program: PathBuf,
}

impl Default for OcrOptions {
    fn default() -> Self {
        OcrOptions {
            languages: "eng".into(),
            dpi: 300,
            page_timeout: Duration::from_secs(120),
            memory_bytes: 2 << 30,
            concurrency: 1,
            program: "tesseract".into(),
        }
    }
}

/// Which pages came from OCR and how sure Tesseract was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OcrReport {
    /// 1-based numbers of the pages whose text came from OCR.
    pub pages: Vec<u32>,
    words: u64,
    confidence_sum: f64,
}

impl OcrReport {
    /// Records one OCR'd page.
    pub fn add(&mut self, page: u32, text: &PageText) {
        self.pages.push(page);
        self.words += text.words;
        self.confidence_sum += text.confidence_sum;
    }

    /// Mean word confidence (0-100) over every OCR'd word, if any.
    pub fn confidence(&self) -> Option<f32> {
        (self.words > 0).then(|| (self.confidence_sum / self.words as f64) as f32)
    }
}

/// Text Tesseract found on one page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageText {
    /// Lines joined by newlines, paragraphs by blank lines.
    pub text: String,
    words: u64,
    confidence_sum: f64,
}

/// Largest rendered page in pixels (about A3 at 300 DPI); bigger pages get a lower DPI.
const MAX_PIXELS: f64 = 36_000_000.0;

/// OCRs one page, drawn into an image file by `render` (in the PDF helper process, see
/// [`super::pdf::isolate::render`], or in this one). `Ok(None)`: Tesseract found no text on it.
pub fn page(
    render: impl FnOnce(&Path) -> Result<(), String>,
    number: u32,
    options: &OcrOptions,
    deadline: Instant,
    pages: u32,
) -> Result<Option<PageText>, ExtractProblem> {
    let doc_timeout = |done: u32, seconds: u64| ExtractProblem::TimedOut {
        seconds,
        done,
        pages,
    };
    check_installed(options)?;
    let total = deadline.saturating_duration_since(Instant::now());
    let _slot = gate()
        .acquire(options.concurrency, deadline)
        .ok_or_else(|| doc_timeout(number - 1, total.as_secs()))?;
    let dir = tempfile::Builder::new()
        .prefix("mindora-ocr-")
        .tempdir()
        .map_err(|e| failed(number, format!("no temporary directory: {e}")))?;
    let image = dir.path().join("page.pgm");
    render(&image).map_err(|e| failed(number, e))?;
    let out = dir.path().join("out");
    let mut cmd = command(options, &image, &out);
    let stderr = std::fs::File::create(dir.path().join("stderr"))
        .map_err(|e| failed(number, format!("temporary file: {e}")))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = cmd.spawn().map_err(|e| spawn_error(options, e))?;
    let now = Instant::now();
    let page_end = now + options.page_timeout;
    let end = page_end.min(deadline);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(if page_end <= deadline {
                    ExtractProblem::OcrTimedOut {
                        page: number,
                        seconds: options.page_timeout.as_secs(),
                    }
                } else {
                    doc_timeout(number - 1, total.as_secs())
                });
            }
        }
    };
    if !status.success() {
        let said = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        let said: String = said.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        return Err(failed(
            number,
            format!("tesseract exited with {status}: {}", said.trim()),
        ));
    }
    let tsv = std::fs::read_to_string(out.with_extension("tsv"))
        .map_err(|e| failed(number, format!("tesseract wrote no output: {e}")))?;
    let text = from_tsv(&tsv);
    Ok((!text.text.trim().is_empty()).then_some(text))
}

fn failed(page: u32, detail: impl Into<String>) -> ExtractProblem {
    ExtractProblem::OcrFailed {
        page,
        detail: detail.into(),
    }
}

fn command(options: &OcrOptions, image: &Path, out: &Path) -> Command {
    let prlimit = Path::new("/usr/bin/prlimit");
    let mut cmd = if options.memory_bytes > 0 && prlimit.is_file() {
        let mut c = Command::new(prlimit);
        c.arg(format!("--as={}", options.memory_bytes))
            .arg("--")
            .arg(&options.program);
        c
    } else {
        Command::new(&options.program)
    };
    cmd.arg(image)
        .arg(out)
        .args(["-l", &options.languages, "--dpi", &options.dpi.to_string()])
        .args(["--psm", "3", "tsv"])
        // One thread per tesseract: the concurrency limit is the CPU budget.
        .env("OMP_THREAD_LIMIT", "1");
    cmd
}

fn spawn_error(options: &OcrOptions, e: std::io::Error) -> ExtractProblem {
    ExtractProblem::OcrUnavailable(format!(
        "could not start {}: {e}",
        options.program.display()
    ))
}

/// Renders `page` as an 8-bit grayscale PGM file at `dpi` (lower for pages over
/// [`MAX_PIXELS`]).
pub fn render(page: &PdfPage<'_>, dpi: u32, path: &Path) -> Result<(), String> {
    let (w, h) = (page.width().value as f64, page.height().value as f64);
    let mut scale = f64::from(dpi.clamp(50, 600)) / 72.0;
    let pixels = w * h * scale * scale;
    if pixels > MAX_PIXELS {
        scale *= (MAX_PIXELS / pixels).sqrt();
    }
    // BGRA: PDFium leaves images out of 8-bit gray bitmaps, so convert here.
    let config = PdfRenderConfig::new()
        .scale_page_by_factor(scale as f32)
        .set_format(PdfBitmapFormat::BGRA)
        .render_annotations(true)
        .render_form_data(true);
    let bitmap = page
        .render_with_config(&config)
        .map_err(|e| format!("PDFium could not render the page: {e}"))?;
    let (width, height) = (
        bitmap.width().max(0) as usize,
        bitmap.height().max(0) as usize,
    );
    let bytes = bitmap.as_raw_bytes();
    if width == 0 || height == 0 || bytes.len() < width * height * 4 {
        return Err(format!("PDFium rendered an empty {width}x{height} image"));
    }
    let stride = bytes.len() / height;
    let mut pgm = format!("P5\n{width} {height}\n255\n").into_bytes();
    pgm.reserve(width * height);
    for row in bytes.chunks_exact(stride) {
        for px in row[..width * 4].chunks_exact(4) {
            // ITU-R BT.601 luma from B, G, R.
            let luma =
                (114 * u32::from(px[0]) + 587 * u32::from(px[1]) + 299 * u32::from(px[2])) / 1000;
            pgm.push(luma.min(255) as u8);
        }
    }
    std::fs::write(path, pgm).map_err(|e| format!("could not write the page image: {e}"))
}

/// Installed tesseract languages per program, remembered once the program answered.
static INSTALLED: OnceLock<Mutex<HashMap<PathBuf, Vec<String>>>> = OnceLock::new();

/// Fails clearly when tesseract or one of the asked-for languages is missing.
fn check_installed(options: &OcrOptions) -> Result<(), ExtractProblem> {
    if !valid_languages(&options.languages) {
        return Err(ExtractProblem::OcrUnavailable(format!(
            "OCR languages {:?} are not a Tesseract language list like chi_sim+eng",
            options.languages
        )));
    }
    let cache = INSTALLED.get_or_init(Default::default);
    let known = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&options.program)
        .cloned();
    let installed = match known {
        Some(l) => l,
        None => {
            let langs = list_languages(&options.program)?;
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(options.program.clone(), langs.clone());
            langs
        }
    };
    let missing: Vec<&str> = options
        .languages
        .split('+')
        .filter(|l| !installed.iter().any(|i| i == l))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ExtractProblem::OcrUnavailable(format!(
        "OCR language(s) {} not installed for tesseract (installed: {}; Debian packages \
         tesseract-ocr-<lang>, e.g. tesseract-ocr-chi-sim)",
        missing.join(", "),
        installed.join(", ")
    )))
}

fn list_languages(program: &Path) -> Result<Vec<String>, ExtractProblem> {
    let out = Command::new(program)
        .arg("--list-langs")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            ExtractProblem::OcrUnavailable(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "OCR requested but tesseract is not installed ({} not found; install the \
                     Debian package tesseract-ocr and its language packs)",
                    program.display()
                )
            } else {
                format!("could not run {}: {e}", program.display())
            })
        })?;
    if !out.status.success() {
        return Err(ExtractProblem::OcrUnavailable(format!(
            "{} --list-langs failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The first line is `List of available languages in "...":`.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Checks a language list names languages only (`chi_sim+eng`), nothing tesseract would read
/// as an option or a path.
pub fn valid_languages(languages: &str) -> bool {
    !languages.is_empty()
        && languages.split('+').all(|l| {
            !l.is_empty()
                && l.len() <= 32
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Counting gate over tesseract processes in this worker process.
struct Gate {
    running: Mutex<usize>,
    freed: Condvar,
}

struct Slot(&'static Gate);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate {
        running: Mutex::new(0),
        freed: Condvar::new(),
    })
}

impl Gate {
    /// Waits for a free slot until `deadline`; `None` when the deadline passed first.
    fn acquire(&'static self, limit: usize, deadline: Instant) -> Option<Slot> {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= limit.max(1) {
            let left = deadline.checked_duration_since(Instant::now())?;
            n = self
                .freed
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        Some(Slot(self))
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0xFF00..=0xFFEF | 0x20000..=0x2FFFF)
}

/// Text and word confidences from Tesseract's TSV output. Words on a line are joined by
/// spaces, except between CJK characters (Tesseract splits those into single-character
/// "words"); lines by newlines, paragraphs and blocks by blank lines.
fn from_tsv(tsv: &str) -> PageText {
    let mut out = PageText::default();
    let mut last: Option<(&str, &str, &str, &str)> = None;
    for row in tsv.lines().skip(1) {
        let c: Vec<&str> = row.splitn(12, '\t').collect();
        if c.len() < 12 || c[0] != "5" {
            continue;
        }
        let word = c[11].trim();
        if word.is_empty() {
            continue;
        }
        let (block, par, line) = (c[2], c[3], c[4]);
        if let Some((b, p, l, prev)) = last {
            if (b, p) != (block, par) {
                out.text.push_str("\n\n");
            } else if l != line {
                out.text.push('\n');
            } else {
                let joined = prev.chars().last().is_some_and(is_cjk)
                    && word.chars().next().is_some_and(is_cjk);
                if !joined {
                    out.text.push(' ');
                }
            }
        }
        out.text.push_str(word);
        if let Ok(conf) = c[10].parse::<f64>() {
            if conf >= 0.0 {
                out.words += 1;
                out.confidence_sum += conf;
            }
        }
        last = Some((block, par, line, word));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n";

    #[test]
    fn tsv_becomes_lines_and_paragraphs() {
        let tsv = format!(
            "{HEAD}1\t1\t0\t0\t0\t0\t0\t0\t10\t10\t-1\t\n\
             5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello\n\
             5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld\n\
             5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tagain\n\
             5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t96\t中\n\
             5\t1\t2\t1\t1\t2\t0\t0\t1\t1\t94\t文。\n\
             5\t1\t2\t1\t1\t3\t0\t0\t1\t1\t-1\t \n"
        );
        let p = from_tsv(&tsv);
        assert_eq!(p.text, "Hello world\nagain\n\n中文。");
        let mut r = OcrReport::default();
        r.add(3, &p);
        assert_eq!(r.pages, vec![3]);
        assert_eq!(r.confidence(), Some(86.0));
    }

    #[test]
    fn languages_are_checked() {
        assert!(valid_languages("chi_sim+chi_tra+jpn+eng"));
        assert!(!valid_languages(""));
        assert!(!valid_languages("eng+"));
        assert!(!valid_languages("--psm"));
        assert!(!valid_languages("../x"));
    }

    #[test]
    fn missing_tesseract_is_a_clear_error() {
        let options = OcrOptions {
            program: "/nonexistent/tesseract".into(),
            ..OcrOptions::default()
        };
        let e = check_installed(&options).unwrap_err();
        assert!(
            e.to_string()
                .contains("OCR requested but tesseract is not installed"),
            "{e}"
        );
    }
}
