//! Word documents (.docx) through docx-rs: paragraphs in order, tables as tab-separated rows.

use docx_rs::{
    DocumentChild, InsertChild, Paragraph, ParagraphChild, Run, RunChild, StructuredDataTag,
    StructuredDataTagChild, Table, TableCellContent, TableChild, TableRowChild,
};

use crate::error::ExtractProblem;

fn corrupt(format: &'static str, detail: impl std::fmt::Display) -> ExtractProblem {
    let detail = detail.to_string();
    if detail.to_ascii_lowercase().contains("password") {
        return ExtractProblem::Encrypted(format);
    }
    ExtractProblem::Corrupt { format, detail }
}

/// Text of a .docx: paragraphs in order, table rows as tab-separated cells.
pub fn docx(bytes: &[u8]) -> Result<String, ExtractProblem> {
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
    Ok(out)
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
