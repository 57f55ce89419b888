//! Extraction across formats, with generated and kept fixtures, and the error cases.

use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};
use mindora_pipelines::ExtractProblem;
use mindora_tests::pipelines::fixtures;

fn ok(name: &str, bytes: &[u8]) -> mindora_pipelines::model::ExtractedText {
    DefaultExtractor
        .extract(name, bytes)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn pdf_pages_and_text() {
    let bytes = fixtures::pdf(&[fixtures::prose_page(1, 5), fixtures::prose_page(2, 5)]);
    let t = ok("report.pdf", &bytes);
    assert_eq!(t.kind, "pdf");
    assert_eq!(t.pages, 2);
    assert!(t.text.contains("Page 1 line 0"), "{}", t.text);
    assert!(t.text.contains("Page 2 line 4"));
    assert_eq!(t.pages_with_text.as_deref(), Some("1-2"));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    // Detected from bytes even with a misleading name.
    assert_eq!(ok("upload.bin", &bytes).kind, "pdf");
}

#[test]
fn docx_paragraphs_tables_and_chinese() {
    let bytes = fixtures::docx(&[
        "Annual plan",
        "第一章：概述。中文内容保持不变。",
        "Closing remarks.",
    ]);
    let t = ok("plan.docx", &bytes);
    assert_eq!(t.kind, "docx");
    assert!(
        t.text
            .contains("Annual plan\n\n第一章：概述。中文内容保持不变。\n\nClosing remarks."),
        "{}",
        t.text
    );
    assert!(t.text.contains("Region\tSales"));
    assert!(t.text.contains("华东\t1200"));
}

#[test]
fn xlsx_every_sheet_as_rows() {
    let t = ok("figures.xlsx", &fixtures::xlsx());
    assert_eq!(t.kind, "xlsx");
    assert_eq!(t.pages, 2);
    assert!(
        t.text
            .contains("# Sheet: Summary\nQuarter\tRevenue\nQ1\t1500\nQ2\t1750.5"),
        "{}",
        t.text
    );
    assert!(
        t.text.contains("# Sheet: 数据\n城市\t人口\n上海\t24870000"),
        "{}",
        t.text
    );
}

#[test]
fn csv_html_markdown_text() {
    let t = ok(
        "people.csv",
        "name,city\n\"Li, Wei\",北京\nAnna,\"Berlin\nMitte\"\n".as_bytes(),
    );
    assert_eq!(t.kind, "csv");
    assert_eq!(t.text, "name\tcity\nLi, Wei\t北京\nAnna\tBerlin Mitte");
    let t = ok("page.html", "<html><head><title>标题</title></head><body><p>你好，世界。</p><script>x()</script></body></html>".as_bytes());
    assert_eq!(t.kind, "html");
    assert_eq!(t.text, "标题\n\n你好，世界。");
    let t = ok("readme.md", b"# Title\n\nSome *markdown*.\n");
    assert_eq!(t.kind, "markdown");
    assert_eq!(t.text, "# Title\n\nSome *markdown*.");
    let t = ok("notes", "日本語のテキスト。한국어 텍스트.".as_bytes());
    assert_eq!(t.kind, "text");
    assert_eq!(t.text, "日本語のテキスト。한국어 텍스트.");
}

#[test]
fn empty_file_is_a_clear_error() {
    for (name, bytes) in [("empty.pdf", &b""[..]), ("empty.txt", &b"\n\n"[..])] {
        assert_eq!(
            DefaultExtractor.extract(name, bytes).unwrap_err(),
            ExtractProblem::Empty
        );
    }
    // A PDF whose only page has no text.
    let blank = fixtures::pdf(&[vec![]]);
    assert_eq!(
        DefaultExtractor.extract("scan.pdf", &blank).unwrap_err(),
        ExtractProblem::Empty
    );
}

#[test]
fn corrupt_pdf_is_a_clear_error() {
    let mut bytes = fixtures::pdf(&[fixtures::prose_page(1, 3)]);
    bytes.truncate(bytes.len() / 3);
    let e = DefaultExtractor.extract("broken.pdf", &bytes).unwrap_err();
    assert!(
        matches!(e, ExtractProblem::Corrupt { format: "PDF", .. }),
        "{e:?}"
    );
    let e = DefaultExtractor
        .extract("fake.pdf", b"this is not a pdf")
        .unwrap_err();
    assert!(
        matches!(e, ExtractProblem::Corrupt { format: "PDF", .. }),
        "{e:?}"
    );
    let e = DefaultExtractor
        .extract("garbage.pdf", b"%PDF-1.7\n\x00\x01garbage\xff\xfe")
        .unwrap_err();
    assert!(
        matches!(e, ExtractProblem::Corrupt { format: "PDF", .. }),
        "{e:?}"
    );
}

#[test]
fn encrypted_pdf_is_a_clear_error() {
    // Made by pypdf with a user password (tests/fixtures/README.md).
    let bytes = fixtures::kept("encrypted.pdf");
    let e = DefaultExtractor.extract("secret.pdf", &bytes).unwrap_err();
    assert_eq!(e, ExtractProblem::PasswordNeeded("PDF"));
    assert!(e.to_string().contains("a password is needed"), "{e}");
    let with = |pw: &str| ExtractOptions {
        password: Some(pw.into()),
        ..ExtractOptions::default()
    };
    let e = DefaultExtractor
        .extract_with("secret.pdf", &bytes, &with("nope"))
        .unwrap_err();
    assert_eq!(e, ExtractProblem::WrongPassword("PDF"));
    // The right password opens it: its one page is blank, so "empty", not "encrypted".
    let e = DefaultExtractor
        .extract_with("secret.pdf", &bytes, &with("secret"))
        .unwrap_err();
    assert_eq!(e, ExtractProblem::Empty);
}

#[test]
fn damaged_xref_is_rebuilt_with_a_warning() {
    let bytes = fixtures::pdf(&[fixtures::prose_page(1, 5), fixtures::prose_page(2, 5)]);
    // A comment after the header shifts every object: all xref offsets are now wrong.
    let mut shifted = b"%PDF-1.5\n%extra bytes that break every offset\n".to_vec();
    shifted.extend_from_slice(&bytes[b"%PDF-1.5\n".len()..]);
    let t = ok("shifted.pdf", &shifted);
    assert!(t.text.contains("Page 2 line 4"), "{}", t.text);
    assert_eq!(t.pages_with_text.as_deref(), Some("1-2"));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("cross-reference table is damaged")),
        "{:?}",
        t.warnings
    );
    // A sound file has no warning.
    assert!(ok("sound.pdf", &bytes).warnings.is_empty());
}

#[test]
fn time_limit_is_enforced_between_pages() {
    let pages: Vec<Vec<String>> = (1..=30).map(|p| fixtures::prose_page(p, 20)).collect();
    let bytes = fixtures::pdf(&pages);
    let options = ExtractOptions {
        time_limit: std::time::Duration::ZERO,
        ..ExtractOptions::default()
    };
    let e = DefaultExtractor
        .extract_with("long.pdf", &bytes, &options)
        .unwrap_err();
    // The PDF helper is killed at the deadline, here before it has even counted the pages
    // (tests/pdf_isolation.rs covers a limit hit inside a page).
    assert!(matches!(e, ExtractProblem::TimedOut { .. }), "{e:?}");
    assert!(e.to_string().contains("time limit"), "{e}");
}

#[test]
fn corrupt_office_files_are_clear_errors() {
    let mut d = fixtures::docx(&["x"]);
    d.truncate(d.len() / 2);
    let e = DefaultExtractor.extract("cut.docx", &d).unwrap_err();
    assert!(matches!(e, ExtractProblem::Corrupt { .. }), "{e:?}");
    let e = DefaultExtractor
        .extract("photo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
        .unwrap_err();
    assert!(matches!(e, ExtractProblem::Unsupported(_)), "{e:?}");
}

#[test]
fn error_message_names_file_and_problem() {
    let e = mindora_pipelines::PipelineError::Extract {
        file: "secret.pdf".into(),
        problem: ExtractProblem::Encrypted("PDF"),
    };
    assert_eq!(
        e.to_string(),
        "secret.pdf: the PDF is encrypted (password-protected); upload an unencrypted copy"
    );
    assert!(!e.is_retryable());
}
