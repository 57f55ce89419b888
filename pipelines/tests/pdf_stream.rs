//! `pdf::extract_blocks`: a PDF file read by a warm helper and delivered to the sink page by
//! page, in page order, as the pages arrive (a page is delivered before later pages are read:
//! a document stopped at its time limit has already delivered its first pages); a page without
//! a text layer is OCR'd inline, in its place; a sink error stops the read and the helper.

mod pdf_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mindora_pipelines::document::{to_markdown, Page};
use mindora_pipelines::extract::ocr::OcrOptions;
use mindora_pipelines::extract::pdf::{self, isolate};
use mindora_pipelines::extract::ExtractOptions;
use mindora_pipelines::ExtractProblem;
use pdf_support::{options, text_pdf, xobject_bomb};

/// Extracts `path` and returns the pages the sink saw (number, Markdown), or the problem.
fn pages(
    path: &Path,
    options: &ExtractOptions,
) -> (Vec<(u32, String)>, Result<pdf::PdfText, ExtractProblem>) {
    let mut seen = Vec::new();
    let result = pdf::extract_blocks(path, options, &mut |page: Page| {
        seen.push((page.number.unwrap_or(0), to_markdown(&page.blocks)));
        Ok(())
    });
    (seen, result)
}

#[test]
fn pages_reach_the_sink_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("five.pdf");
    let texts = [
        "Page one",
        "Page two",
        "Page three",
        "Page four",
        "Page five",
    ];
    std::fs::write(&file, text_pdf(&texts)).unwrap();
    let (seen, result) = pages(&file, &options(60));
    let summary = result.unwrap();
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    for ((_, md), want) in seen.iter().zip(texts) {
        assert_eq!(md.trim(), want);
    }
    assert_eq!((summary.pages, summary.text.as_str()), (5, ""));
    assert_eq!(summary.pages_with_text, vec![1, 2, 3, 4, 5]);
}

#[test]
fn pages_are_delivered_before_the_document_ends() {
    // Page 1 is text; page 2 keeps PDFium busy past the 1 s limit. Page 1 was delivered
    // while page 2 was still being read.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.pdf");
    let bomb = dir.path().join("bomb.pdf");
    let both = dir.path().join("both.pdf");
    std::fs::write(&first, text_pdf(&["Early page"])).unwrap();
    std::fs::write(&bomb, xobject_bomb(10)).unwrap();
    let united = Command::new("pdfunite")
        .arg(&first)
        .arg(&bomb)
        .arg(&both)
        .status()
        .expect("pdfunite (poppler-utils, tests/setup.sh)");
    assert!(united.success());
    let (seen, result) = pages(&both, &options(1));
    assert_eq!(
        result.unwrap_err(),
        ExtractProblem::TimedOut {
            seconds: 1,
            done: 1,
            pages: 2
        }
    );
    assert_eq!(seen, vec![(1, "Early page".to_string())]);
}

#[test]
fn a_sink_error_stops_the_read_and_its_helper() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("three.pdf");
    std::fs::write(&file, text_pdf(&["a", "b", "c"])).unwrap();
    let mut seen = 0;
    let e = pdf::extract_blocks(&file, &options(60), &mut |_page: Page| {
        seen += 1;
        Err(ExtractProblem::Stopped("the index is down".into()))
    })
    .unwrap_err();
    assert_eq!(e, ExtractProblem::Stopped("the index is down".into()));
    assert_eq!(seen, 1);
    let pool = isolate::shared(&isolate::helper().unwrap());
    let stats = pool.stats();
    assert_eq!((stats.live, stats.retired.len()), (0, 1), "{stats:?}");
    // The next document reads fine on a fresh helper.
    let (seen, result) = pages(&file, &options(60));
    result.unwrap();
    assert_eq!(seen.len(), 3);
}

#[test]
fn a_page_without_text_is_ocrd_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("text.pdf"), text_pdf(&["First page", "Third page"])).unwrap();
    std::fs::write(d.join("scan-src.pdf"), text_pdf(&["HELLO SCANNED WORLD"])).unwrap();
    let run = |cmd: &mut Command| assert!(cmd.status().expect("poppler-utils, img2pdf").success());
    run(Command::new("pdftoppm")
        .args(["-r", "200", "-gray", "-singlefile"])
        .arg(d.join("scan-src.pdf"))
        .arg(d.join("scan")));
    run(Command::new("img2pdf")
        .args(["-s", "200dpix200dpi", "-o"])
        .arg(d.join("scan.pdf"))
        .arg(d.join("scan.pgm")));
    run(Command::new("pdfseparate")
        .arg(d.join("text.pdf"))
        .arg(d.join("t%d.pdf")));
    run(Command::new("pdfunite")
        .arg(d.join("t1.pdf"))
        .arg(d.join("scan.pdf"))
        .arg(d.join("t2.pdf"))
        .arg(d.join("mixed.pdf")));
    let with_ocr = ExtractOptions {
        ocr: Some(OcrOptions {
            page_timeout: Duration::from_secs(600),
            ..OcrOptions::default()
        }),
        ..options(1200)
    };
    let (seen, result) = pages(&d.join("mixed.pdf"), &with_ocr);
    let summary = result.unwrap();
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert!(seen[1].1.contains("SCANNED"), "{seen:?}");
    assert_eq!(summary.ocr.pages, vec![2]);
    // Without OCR the page is reported, and the others still arrive.
    let (seen, result) = pages(&d.join("mixed.pdf"), &options(60));
    let summary = result.unwrap();
    assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
    assert!(summary.warnings.iter().any(|w| w.contains("OCR needed")));
}
