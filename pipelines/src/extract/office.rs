//! Word (docx-rs), spreadsheets (calamine) and CSV.

use std::io::Cursor;

use calamine::{Data, Ods, Reader, Xls, Xlsx};
use docx_rs::{
    DocumentChild, InsertChild, Paragraph, ParagraphChild, Run, RunChild, StructuredDataTag,
    StructuredDataTagChild, Table, TableCellContent, TableChild, TableRowChild,
};

use super::Kind;
use crate::error::ExtractProblem;

fn corrupt(format: &'static str, detail: impl std::fmt::Display) -> ExtractProblem {
    let detail = detail.to_string();
    if detail.to_ascii_lowercase().contains("password") {
        return ExtractProblem::Encrypted(format);
    }
    ExtractProblem::Corrupt { format, detail }
}

/// Text of a .docx: paragraphs in order, table rows as tab-separated cells.
pub fn docx(bytes: &[u8]) -> Result<(String, u32), ExtractProblem> {
    let doc = docx_rs::read_docx(bytes).map_err(|e| corrupt("Word document", e))?;
    let mut out = String::new();
    for child in &doc.document.children {
        match child {
            DocumentChild::Paragraph(p) => paragraph(p, &mut out),
            DocumentChild::Table(t) => table(t, &mut out),
            DocumentChild::StructuredDataTag(s) => sdt(s, &mut out),
            _ => {}
        }
    }
    Ok((out, 1))
}

fn paragraph(p: &Paragraph, out: &mut String) {
    for child in &p.children {
        paragraph_child(child, out);
    }
    out.push_str("\n\n");
}

fn paragraph_child(child: &ParagraphChild, out: &mut String) {
    match child {
        ParagraphChild::Run(r) => run(r, out),
        ParagraphChild::Hyperlink(h) => h.children.iter().for_each(|c| paragraph_child(c, out)),
        ParagraphChild::Insert(ins) => {
            for c in &ins.children {
                if let InsertChild::Run(r) = c {
                    run(r, out);
                }
            }
        }
        ParagraphChild::StructuredDataTag(s) => sdt(s, out),
        _ => {}
    }
}

fn run(r: &Run, out: &mut String) {
    for c in &r.children {
        match c {
            RunChild::Text(t) => out.push_str(&t.text),
            RunChild::Tab(_) | RunChild::PTab(_) => out.push('\t'),
            RunChild::Break(_) | RunChild::CarriageReturn(_) => out.push('\n'),
            _ => {}
        }
    }
}

fn sdt(s: &StructuredDataTag, out: &mut String) {
    for c in &s.children {
        match c {
            StructuredDataTagChild::Run(r) => run(r, out),
            StructuredDataTagChild::Paragraph(p) => paragraph(p, out),
            StructuredDataTagChild::Table(t) => table(t, out),
            StructuredDataTagChild::StructuredDataTag(s) => sdt(s, out),
            _ => {}
        }
    }
}

fn table(t: &Table, out: &mut String) {
    for TableChild::TableRow(row) in &t.rows {
        let mut cells = Vec::new();
        for TableRowChild::TableCell(cell) in &row.cells {
            let mut text = String::new();
            for c in &cell.children {
                match c {
                    TableCellContent::Paragraph(p) => {
                        p.children
                            .iter()
                            .for_each(|c| paragraph_child(c, &mut text));
                        text.push(' ');
                    }
                    TableCellContent::Table(t) => table(t, &mut text),
                    _ => {}
                }
            }
            cells.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out.push('\n');
}

/// Every sheet of a workbook: a `# Sheet: name` heading, then one line per row with cells
/// separated by tabs. Returns the number of sheets as "pages".
pub fn spreadsheet(kind: Kind, bytes: &[u8]) -> Result<(String, u32), ExtractProblem> {
    let cursor = Cursor::new(bytes);
    let sheets: Vec<(String, calamine::Range<Data>)> = match kind {
        Kind::Xls => read_all(
            calamine::open_workbook_from_rs::<Xls<_>, _>(cursor)
                .map_err(|e| corrupt("spreadsheet", e))?,
        ),
        Kind::Ods => read_all(
            calamine::open_workbook_from_rs::<Ods<_>, _>(cursor)
                .map_err(|e| corrupt("spreadsheet", e))?,
        ),
        _ => read_all(
            calamine::open_workbook_from_rs::<Xlsx<_>, _>(cursor)
                .map_err(|e| corrupt("spreadsheet", e))?,
        ),
    }?;
    let mut out = String::new();
    for (name, range) in &sheets {
        out.push_str("# Sheet: ");
        out.push_str(name);
        out.push('\n');
        for row in range.rows() {
            let cells: Vec<String> = row.iter().map(cell_text).collect();
            let line = cells.join("\t");
            if !line.trim().is_empty() {
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        out.push('\n');
    }
    Ok((out, sheets.len() as u32))
}

fn read_all<RS, R>(mut wb: R) -> Result<Vec<(String, calamine::Range<Data>)>, ExtractProblem>
where
    RS: std::io::Read + std::io::Seek,
    R: Reader<RS>,
    R::Error: std::fmt::Display,
{
    let mut sheets = Vec::new();
    for name in wb.sheet_names() {
        let range = wb
            .worksheet_range(&name)
            .map_err(|e| corrupt("spreadsheet", format!("sheet {name:?}: {e}")))?;
        sheets.push((name, range));
    }
    Ok(sheets)
}

fn cell_text(c: &Data) -> String {
    match c {
        Data::Empty => String::new(),
        Data::String(s) => s.replace(['\n', '\t'], " "),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_string(),
    }
}

/// CSV (or TSV) rows as tab-separated lines; quoting and embedded newlines handled by `csv`.
pub fn csv(bytes: &[u8]) -> Result<String, ExtractProblem> {
    let text = super::detect::decode_text(bytes);
    let first = text.lines().next().unwrap_or("");
    let delimiter = if first.matches('\t').count() > first.matches(',').count() {
        b'\t'
    } else if first.matches(';').count() > first.matches(',').count() {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut out = String::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ExtractProblem::Corrupt {
            format: "CSV file",
            detail: format!("row {}: {e}", i + 1),
        })?;
        let cells: Vec<String> = record
            .iter()
            .map(|c| c.replace(['\n', '\t'], " "))
            .collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    Ok(out)
}
