//! PDF extraction in its child process (`mindora-pdf`): a page that keeps PDFium busy is
//! stopped at the time limit, mid-page; an engine crash and a memory blow-up fail the one
//! document with a clear reason; the worker's process is untouched by all three. Pages rendered
//! for OCR are drawn by the helper too, so a renderer crash or hang costs only that page.
//!
//! The pathological PDF is real and tiny: nested form XObjects, each drawing the next one four
//! times, so one page holds 4^(depth-1) text objects (depth 10: 262 144, which PDFium takes
//! seconds and over a gigabyte to lay out; depth 11 four times that).

mod pdf_support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mindora_pipelines::extract::pdf::isolate::{self, Helper};
use mindora_pipelines::extract::pdf::Collect;
use mindora_pipelines::extract::{DefaultExtractor, Extractor};
use mindora_pipelines::ExtractProblem;
use pdf_support::{options, real_helper, xobject_bomb};

#[test]
fn a_page_that_never_ends_is_stopped_at_the_time_limit() {
    let bytes = xobject_bomb(10);
    let started = Instant::now();
    let mut pages = Collect::default();
    let e = isolate::run(&real_helper(0), &bytes, &options(1), &mut pages).unwrap_err();
    let took = started.elapsed();
    // Page 1 of 1 not done: the child was stopped inside the page (a check between pages
    // would have let this single page run to its end, and succeed).
    assert_eq!(
        e,
        ExtractProblem::TimedOut {
            seconds: 1,
            done: 0,
            pages: 1
        },
        "{e}"
    );
    assert!(e.to_string().contains("time limit"), "{e}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn the_default_extractor_uses_the_helper_and_its_time_limit() {
    assert!(
        isolate::helper().is_some(),
        "mindora-pdf is built next to the test binaries"
    );
    let e = DefaultExtractor
        .extract_with("bomb.pdf", &xobject_bomb(10), &options(1))
        .unwrap_err();
    assert!(
        matches!(e, ExtractProblem::TimedOut { seconds: 1, .. }),
        "{e}"
    );
    // The same engine reads a sound file afterwards: the worker's process was never involved.
    let t = DefaultExtractor
        .extract("small.pdf", &xobject_bomb(3))
        .unwrap();
    assert!(t.text.contains("Deep text"), "{}", t.text);
}

#[test]
fn a_memory_blow_up_fails_the_document_not_the_worker() {
    let mut pages = Collect::default();
    let e = isolate::run(
        &real_helper(300),
        &xobject_bomb(11),
        &options(300),
        &mut pages,
    )
    .unwrap_err();
    let ExtractProblem::EngineFailed(detail) = &e else {
        panic!("expected EngineFailed, got {e}");
    };
    assert!(detail.contains("memory limit of 300 MiB"), "{e}");
}

#[test]
fn an_engine_crash_fails_the_document_with_the_signal() {
    // Stand-in for PDFium crashing on a hostile file: the helper dies of SIGSEGV mid-read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crashing-helper");
    std::fs::write(&path, "#!/bin/sh\nhead -c 1 >/dev/null\nkill -SEGV $$\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper = Helper { path, memory_mb: 0 };
    let mut pages = Collect::default();
    let e = isolate::run(&helper, &xobject_bomb(3), &options(30), &mut pages).unwrap_err();
    let ExtractProblem::EngineFailed(detail) = &e else {
        panic!("expected EngineFailed, got {e}");
    };
    assert!(detail.contains("crashed (signal 11)"), "{e}");
}

fn render_request(path: PathBuf) -> isolate::RenderRequest {
    isolate::RenderRequest {
        page: 1,
        dpi: 72,
        path,
    }
}

#[test]
fn pages_for_ocr_are_rendered_by_the_helper() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("page.pgm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let request = render_request(image.clone());
    isolate::render(&real_helper(0), &xobject_bomb(3), None, request, deadline).unwrap();
    let pgm = std::fs::read(&image).unwrap();
    assert!(pgm.starts_with(b"P5\n"), "not a PGM image");
    // A page that does not exist is a reason, not a crash.
    let mut missing = render_request(dir.path().join("none.pgm"));
    missing.page = 9;
    let e =
        isolate::render(&real_helper(0), &xobject_bomb(3), None, missing, deadline).unwrap_err();
    assert!(e.contains("could not load the page"), "{e}");
}

#[test]
fn a_renderer_crash_or_hang_fails_the_page_not_the_worker() {
    // Stand-ins for PDFium's renderer crashing or looping on a hostile page: the helper dies
    // of SIGSEGV, or sleeps, when asked to render.
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nhead -c 1 >/dev/null\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Helper { path, memory_mb: 0 }
    };
    let image = dir.path().join("page.pgm");
    let soon = || Instant::now() + Duration::from_secs(2);
    let e = isolate::render(
        &script("crash", "kill -SEGV $$"),
        &xobject_bomb(3),
        None,
        render_request(image.clone()),
        soon(),
    )
    .unwrap_err();
    assert!(e.contains("crashed (signal 11)"), "{e}");
    let started = Instant::now();
    let e = isolate::render(
        &script("hang", "exec sleep 600"),
        &xobject_bomb(3),
        None,
        render_request(image),
        soon(),
    )
    .unwrap_err();
    assert!(e.contains("time limit"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
