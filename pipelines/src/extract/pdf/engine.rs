//! Finding and loading PDFium, the PDF engine of Chromium (BSD/Apache-2.0).
//!
//! PDFium is a C++ shared library loaded at run time. The pinned build comes from the
//! `pypdfium2` wheel on PyPI: `pipelines/tests/setup.sh` (CI, developers) and
//! `worker/Dockerfile` (the image) unpack its `libpdfium.so`. The library is found through
//! `MINDORA_PDFIUM_LIB` (the file or its directory), else in `$MINDORA_CACHE/pdfium/` (where
//! setup.sh puts it), next to the running executable, or in `/usr/local/lib` and `/usr/lib`.
//! It is bound once per process; PDFium is not thread-safe, so the `thread_safe` feature of
//! pdfium-render serialises calls into it (which is why extraction normally runs in warm child
//! processes, one document at a time in each, see `isolate`).
//!
//! Fonts: PDFium drops text drawn in a font it has no glyphs for (a non-embedded CJK font
//! such as Ryumin-Light or HeiseiMin-W3, common in Japanese PDFs), because those glyphs get
//! zero-width boxes. So it is given a CJK fallback font: Debian's `fonts-droid-fallback`,
//! unpacked by setup.sh into `fonts/` next to `libpdfium.so` (the image installs the package
//! into `/usr/share/fonts`), plus the system font directories.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pdfium_render::prelude::{Pdfium, PdfiumLibraryConfig};

use crate::error::ExtractProblem;

/// Environment variable naming `libpdfium.so` (or the directory holding it).
pub const LIB_ENV: &str = "MINDORA_PDFIUM_LIB";

static PDFIUM: OnceLock<Result<Pdfium, String>> = OnceLock::new();

/// The process-wide PDFium binding, loaded on first use.
pub fn pdfium() -> Result<&'static Pdfium, ExtractProblem> {
    PDFIUM
        .get_or_init(load)
        .as_ref()
        .map_err(|e| ExtractProblem::EngineUnavailable(e.clone()))
}

/// Where `libpdfium.so` is looked for, in order.
pub fn candidates() -> Vec<PathBuf> {
    let name = Pdfium::pdfium_platform_library_name();
    let in_dir = |dir: &Path| dir.join(&name);
    if let Some(value) = std::env::var_os(LIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return vec![if path.is_dir() { in_dir(&path) } else { path }];
    }
    let mut out = Vec::new();
    let cache = std::env::var_os("MINDORA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mindora")));
    if let Some(cache) = cache {
        out.push(in_dir(&cache.join("pdfium")));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(in_dir(&dir));
    }
    out.push(in_dir(Path::new("/usr/local/lib")));
    out.push(in_dir(Path::new("/usr/lib")));
    out
}

/// Font directories handed to PDFium, existing ones only: `fonts/` beside the library (the CJK
/// fallback from setup.sh), then the usual system directories (replaced, not extended, by a
/// user list, so they are named here too).
fn font_dirs(library: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(dir) = library.parent() {
        dirs.push(dir.join("fonts"));
    }
    for d in [
        "/usr/share/fonts",
        "/usr/local/share/fonts",
        "/usr/share/X11/fonts/Type1",
        "/usr/share/X11/fonts/TTF",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .filter(|d| d.is_dir())
        .filter_map(|d| d.to_str().map(|s| format!("{s}/")))
        .collect()
}

fn load() -> Result<Pdfium, String> {
    let tried = candidates();
    let mut errors = Vec::new();
    for path in &tried {
        if !path.is_file() {
            continue;
        }
        match Pdfium::bind_to_library(path) {
            Ok(bindings) => {
                let fonts = font_dirs(path);
                tracing::info!(library = %path.display(), fonts = ?fonts, "PDFium loaded");
                let config = PdfiumLibraryConfig::new()
                    .set_user_font_paths(&fonts.iter().map(String::as_str).collect::<Vec<_>>())
                    .map_err(|e| format!("PDFium font paths {fonts:?}: {e}"))?;
                return Ok(Pdfium::new_with_config(bindings, config));
            }
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(if errors.is_empty() {
        format!(
            "the PDFium library (libpdfium.so) was not found; set {LIB_ENV} to its path \
             (pipelines/tests/setup.sh installs the pinned build from the pypdfium2 wheel); \
             looked in: {}",
            tried.join(", ")
        )
    } else {
        format!(
            "the PDFium library could not be loaded: {}",
            errors.join("; ")
        )
    })
}
