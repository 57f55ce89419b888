//! Word documents (.docx) through docx-rs: paragraphs in order, tables as tab-separated rows;
//! or the document model (heading styles, lists, tables).

use docx_rs::{
    DocumentChild, InsertChild, Paragraph, ParagraphChild, Run, RunChild, StructuredDataTag,
    StructuredDataTagChild, Table, TableCell, TableCellContent, TableChild, TableRowChild,
};

use std::collections::HashMap;

use crate::document::Block;
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

/// A cell's paragraphs (and nested tables, flattened) on one line.
fn cell_text(cell: &TableCell) -> String {
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
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn table(t: &Table, out: &mut String) {
    for TableChild::TableRow(row) in &t.rows {
        let mut cells = Vec::new();
        for TableRowChild::TableCell(cell) in &row.cells {
            cells.push(cell_text(cell));
        }
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    out.push('\n');
}

/// The document model of a .docx: heading styles (`Heading 1`..`9`, `Title`, or an outline
/// level) as headings, numbered paragraphs (`numPr`, directly or through their style) as list
/// items, tables with their first row as the header.
pub fn blocks(bytes: &[u8]) -> Result<Vec<Block>, ExtractProblem> {
    let doc = docx_rs::read_docx(bytes).map_err(|e| corrupt("Word document", e))?;
    let styles = Styles::new(&doc);
    let mut out = Vec::new();
    for child in &doc.document.children {
        match child {
            DocumentChild::Paragraph(p) => styles.paragraph(p, &mut out),
            DocumentChild::Table(t) => out.push(table_block(t)),
            DocumentChild::StructuredDataTag(s) => styles.sdt(s, &mut out),
            _ => {}
        }
    }
    Ok(out)
}

/// What a paragraph style says about structure.
#[derive(Default, Clone, Copy)]
struct StyleInfo {
    heading: Option<u8>,
    numbering: Option<(usize, usize)>,
}

struct Styles<'a> {
    by_id: HashMap<&'a str, StyleInfo>,
    numberings: &'a docx_rs::Numberings,
}

impl<'a> Styles<'a> {
    fn new(doc: &'a docx_rs::Docx) -> Self {
        let mut by_id = HashMap::new();
        for s in &doc.styles.styles {
            let pp = &s.paragraph_property;
            let heading = if s.name.is_heading() {
                s.name.get_heading_number().map(level)
            } else if s.name.starts_with("Title") || s.style_id == "Title" {
                Some(1)
            } else {
                pp.outline_lvl
                    .as_ref()
                    .filter(|o| o.v < 9)
                    .map(|o| level(o.v + 1))
            };
            by_id.insert(
                s.style_id.as_str(),
                StyleInfo {
                    heading,
                    numbering: numbering(pp),
                },
            );
        }
        Styles {
            by_id,
            numberings: &doc.numberings,
        }
    }

    fn paragraph(&self, p: &Paragraph, out: &mut Vec<Block>) {
        let mut text = String::new();
        p.children
            .iter()
            .for_each(|c| paragraph_child(c, &mut text));
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let style = p
            .property
            .style
            .as_ref()
            .and_then(|s| self.by_id.get(s.val.as_str()).copied())
            .unwrap_or_default();
        let heading = p
            .property
            .outline_lvl
            .as_ref()
            .filter(|o| o.v < 9)
            .map(|o| level(o.v + 1))
            .or(style.heading);
        let text = text.to_string();
        if let Some(level) = heading {
            out.push(Block::Heading { level, text });
        } else if let Some((id, lvl)) = numbering(&p.property).or(style.numbering) {
            out.push(Block::ListItem {
                ordered: self.ordered(id, lvl),
                depth: u8::try_from(lvl).unwrap_or(u8::MAX),
                text,
            });
        } else {
            out.push(Block::Paragraph { text });
        }
    }

    fn sdt(&self, s: &StructuredDataTag, out: &mut Vec<Block>) {
        for c in &s.children {
            match c {
                StructuredDataTagChild::Paragraph(p) => self.paragraph(p, out),
                StructuredDataTagChild::Table(t) => out.push(table_block(t)),
                StructuredDataTagChild::StructuredDataTag(s) => self.sdt(s, out),
                _ => {}
            }
        }
    }

    /// Whether list `id` numbers its level `lvl` (anything but bullets).
    fn ordered(&self, id: usize, lvl: usize) -> bool {
        let Some(num) = self.numberings.numberings.iter().find(|n| n.id == id) else {
            return false;
        };
        self.numberings
            .abstract_nums
            .iter()
            .find(|a| a.id == num.abstract_num_id)
            .and_then(|a| a.levels.iter().find(|l| l.level == lvl))
            .is_some_and(|l| !matches!(l.format.val.as_str(), "bullet" | "none"))
    }
}

fn level(n: usize) -> u8 {
    u8::try_from(n.clamp(1, 6)).unwrap_or(6)
}

/// A paragraph property's list (numbering id, level); id 0 means "not a list".
fn numbering(pp: &docx_rs::ParagraphProperty) -> Option<(usize, usize)> {
    let np = pp.numbering_property.as_ref()?;
    let id = np.id.as_ref()?.id;
    (id != 0).then(|| (id, np.level.as_ref().map_or(0, |l| l.val)))
}

fn table_block(t: &Table) -> Block {
    let mut rows = Vec::new();
    for TableChild::TableRow(row) in &t.rows {
        let mut cells = Vec::new();
        for TableRowChild::TableCell(cell) in &row.cells {
            cells.push(cell_text(cell));
        }
        rows.push(cells);
    }
    let header = if rows.is_empty() {
        Vec::new()
    } else {
        rows.remove(0)
    };
    Block::Table { header, rows }
}
