//! PDF extraction in its child process (`mindora-pdf`): a page that keeps PDFium busy is
//! stopped at the time limit, mid-page; an engine crash and a memory blow-up fail the one
//! document with a clear reason; the worker's process is untouched by all three. Pages rendered
//! for OCR are drawn by the helper too, so a renderer crash or hang costs only that page.
//!
//! The pathological PDF is real and tiny: nested form XObjects, each drawing the next one four
//! times, so one page holds 4^(depth-1) text objects (depth 10: 262 144, which PDFium takes
//! seconds and over a gigabyte to lay out; depth 11 four times that).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mindora_pipelines::extract::pdf::isolate::{self, Helper};
use mindora_pipelines::extract::pdf::Collect;
use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};
use mindora_pipelines::ExtractProblem;

/// A one-page PDF whose page draws form XObject 1, which draws 2 four times, ... to `depth`.
fn xobject_bomb(depth: usize) -> Vec<u8> {
    fn stream(body: &str, extra: &str) -> String {
        format!(
            "<< /Length {}{extra} >>\nstream\n{body}\nendstream",
            body.len()
        )
    }
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /XObject << /X 6 0 R >> >> >>"
            .to_string(),
        stream("/X Do", ""),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for k in 0..depth {
        let me = 6 + k;
        let (body, resources) = if k == depth - 1 {
            (
                "BT /F1 4 Tf 10 10 Td (Deep text) Tj ET".to_string(),
                "/Resources << /Font << /F1 5 0 R >> >>".to_string(),
            )
        } else {
            (
                (0..4)
                    .map(|i| format!("q 1 0 0 1 {} {} cm /X Do Q ", i * 3, i * 2))
                    .collect(),
                format!("/Resources << /XObject << /X {} 0 R >> >>", me + 1),
            )
        };
        objs.push(stream(
            &body,
            &format!(" /Type /XObject /Subtype /Form /BBox [0 0 612 792] {resources}"),
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        write!(out, "{} 0 obj\n{o}\nendobj\n", i + 1).unwrap();
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).unwrap();
    for o in offsets {
        writeln!(out, "{o:010} 00000 n ").unwrap();
    }
    write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objs.len() + 1
    )
    .unwrap();
    out
}

fn real_helper(memory_mb: u64) -> Helper {
    Helper {
        path: PathBuf::from(env!("CARGO_BIN_EXE_mindora-pdf")),
        memory_mb,
    }
}

fn options(seconds: u64) -> ExtractOptions {
    ExtractOptions {
        time_limit: Duration::from_secs(seconds),
        ..ExtractOptions::default()
    }
}

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
