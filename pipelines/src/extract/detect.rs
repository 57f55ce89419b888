//! Type detection from bytes.

use std::io::Cursor;

use crate::error::ExtractProblem;

/// Document types the extractor understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PDF.
    Pdf,
    /// Word 2007+ (.docx).
    Docx,
    /// Excel 2007+ (.xlsx).
    Xlsx,
    /// Excel 97-2003 (.xls).
    Xls,
    /// OpenDocument spreadsheet (.ods).
    Ods,
    /// Comma or tab separated values.
    Csv,
    /// HTML.
    Html,
    /// Markdown (kept as is: it reads well as text).
    Markdown,
    /// Any other UTF-8/UTF-16/GB18030 text.
    Text,
}

impl Kind {
    /// Stable short name stored with the document.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Xlsx => "xlsx",
            Kind::Xls => "xls",
            Kind::Ods => "ods",
            Kind::Csv => "csv",
            Kind::Html => "html",
            Kind::Markdown => "markdown",
            Kind::Text => "text",
        }
    }

    /// Human name used in error messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pdf => "PDF",
            Kind::Docx => "Word document",
            Kind::Xlsx | Kind::Xls | Kind::Ods => "spreadsheet",
            Kind::Csv => "CSV file",
            Kind::Html => "HTML page",
            Kind::Markdown => "Markdown file",
            Kind::Text => "text file",
        }
    }

    /// MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Kind::Xls => "application/vnd.ms-excel",
            Kind::Ods => "application/vnd.oasis.opendocument.spreadsheet",
            Kind::Csv => "text/csv",
            Kind::Html => "text/html",
            Kind::Markdown => "text/markdown",
            Kind::Text => "text/plain",
        }
    }
}

const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Detects the document type of `bytes`; `name` only disambiguates text formats.
pub fn detect(name: &str, bytes: &[u8]) -> Result<Kind, ExtractProblem> {
    let ext = extension(name);
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ExtractProblem::Empty);
    }
    let head = &bytes[..bytes.len().min(1024)];
    if contains(head, b"%PDF-") {
        return Ok(Kind::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return detect_zip(&ext, bytes);
    }
    if bytes.starts_with(OLE_MAGIC) {
        // Encrypted .docx/.xlsx are OLE containers holding an EncryptedPackage stream.
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        if contains(bytes, &utf16("EncryptedPackage")) {
            return Err(ExtractProblem::Encrypted("Office document"));
        }
        return match ext.as_str() {
            "doc" => Err(ExtractProblem::Unsupported(
                "legacy Word 97-2003 .doc; save it as .docx".into(),
            )),
            "ppt" => Err(ExtractProblem::Unsupported("PowerPoint .ppt".into())),
            _ => Ok(Kind::Xls),
        };
    }
    for (magic, what) in [
        (&b"\x89PNG"[..], "PNG image"),
        (&b"\xFF\xD8\xFF"[..], "JPEG image"),
        (&b"GIF8"[..], "GIF image"),
        (&b"\x1F\x8B"[..], "gzip archive"),
        (&b"Rar!"[..], "RAR archive"),
        (&b"7z\xBC\xAF"[..], "7-Zip archive"),
    ] {
        if bytes.starts_with(magic) {
            return Err(ExtractProblem::Unsupported(what.into()));
        }
    }
    let looks_binary = !bytes.starts_with(&[0xFF, 0xFE])
        && !bytes.starts_with(&[0xFE, 0xFF])
        && head.iter().filter(|&&b| b == 0).count() > 0;
    if looks_binary {
        return match ext.as_str() {
            "pdf" => Err(ExtractProblem::Corrupt {
                format: "PDF",
                detail: "no PDF header found".into(),
            }),
            "docx" | "xlsx" => Err(ExtractProblem::Corrupt {
                format: if ext == "docx" {
                    "Word document"
                } else {
                    "spreadsheet"
                },
                detail: "not a ZIP package".into(),
            }),
            _ => Err(ExtractProblem::Unsupported(format!(
                "binary file{}",
                if ext.is_empty() {
                    String::new()
                } else {
                    format!(" (.{ext})")
                }
            ))),
        };
    }
    // Text of some kind. A PDF/Office name on text bytes means a broken upload.
    match ext.as_str() {
        "pdf" => {
            return Err(ExtractProblem::Corrupt {
                format: "PDF",
                detail: "no PDF header found".into(),
            })
        }
        "docx" | "xlsx" | "xls" | "ods" => {
            return Err(ExtractProblem::Corrupt {
                format: if ext == "docx" {
                    "Word document"
                } else {
                    "spreadsheet"
                },
                detail: "the file is plain text, not an Office package".into(),
            })
        }
        _ => {}
    }
    let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
    let start = start.trim_start_matches('\u{feff}').trim_start();
    if matches!(ext.as_str(), "html" | "htm" | "xhtml")
        || start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || (start.starts_with('<') && start.contains("<body"))
    {
        return Ok(Kind::Html);
    }
    Ok(match ext.as_str() {
        "csv" | "tsv" => Kind::Csv,
        "md" | "markdown" => Kind::Markdown,
        _ => Kind::Text,
    })
}

fn detect_zip(ext: &str, bytes: &[u8]) -> Result<Kind, ExtractProblem> {
    let label = match ext {
        "docx" => "Word document",
        "xlsx" | "ods" => "spreadsheet",
        _ => "ZIP package",
    };
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractProblem::Corrupt {
            format: label,
            detail: e.to_string(),
        })?;
    let has = |a: &zip::ZipArchive<Cursor<&[u8]>>, n: &str| a.index_for_name(n).is_some();
    if has(&archive, "word/document.xml") {
        return Ok(Kind::Docx);
    }
    if has(&archive, "xl/workbook.xml") || has(&archive, "xl/workbook.bin") {
        return Ok(Kind::Xlsx);
    }
    if has(&archive, "mimetype") {
        let mut mime = String::new();
        if let Ok(mut f) = archive.by_name("mimetype") {
            use std::io::Read;
            let _ = f.by_ref().take(200).read_to_string(&mut mime);
        }
        if mime.contains("opendocument.spreadsheet") {
            return Ok(Kind::Ods);
        }
        return Err(ExtractProblem::Unsupported(format!(
            "OpenDocument type {}",
            mime.trim()
        )));
    }
    if has(&archive, "ppt/presentation.xml") {
        return Err(ExtractProblem::Unsupported("PowerPoint .pptx".into()));
    }
    match ext {
        "docx" | "xlsx" | "ods" => Err(ExtractProblem::Corrupt {
            format: label,
            detail: "the ZIP package has none of the expected parts".into(),
        }),
        _ => Err(ExtractProblem::Unsupported("ZIP archive".into())),
    }
}

/// Decodes text bytes: UTF-8 (with or without BOM), UTF-16 with BOM, else GB18030 (common for
/// Chinese text saved on Windows), else Windows-1252.
pub fn decode_text(bytes: &[u8]) -> String {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = enc.decode_without_bom_handling(&bytes[bom..]);
        return text.into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
            if !had_errors {
                return text.into_owned();
            }
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
                .into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_bytes_not_name() {
        assert_eq!(detect("x.txt", b"%PDF-1.4\n...").unwrap(), Kind::Pdf);
        assert_eq!(
            detect("page.txt", b"<!DOCTYPE html><html><body>hi</body></html>").unwrap(),
            Kind::Html
        );
        assert_eq!(detect("a.csv", b"a,b\n1,2\n").unwrap(), Kind::Csv);
        assert_eq!(detect("a.md", b"# T\n").unwrap(), Kind::Markdown);
        assert!(matches!(
            detect("a.pdf", b"hello"),
            Err(ExtractProblem::Corrupt { format: "PDF", .. })
        ));
        assert!(matches!(
            detect("a.png", b"\x89PNG\r\n\x1a\n\0\0"),
            Err(ExtractProblem::Unsupported(_))
        ));
    }

    #[test]
    fn decodes_gb18030_and_utf16() {
        let (gbk, _, _) = encoding_rs::GB18030.encode("中文文档");
        assert_eq!(decode_text(&gbk), "中文文档");
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("中文".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decode_text(&utf16), "中文");
    }
}
