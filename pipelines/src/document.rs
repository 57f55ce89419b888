//! The document model extraction hands to chunking: blocks (headings, paragraphs, list items,
//! tables) grouped by page, rendered as Markdown for storage.
//!
//! Why a model and not plain text: headings, lists and tables are what make retrieval good. A
//! chunker that sees them can keep a table row whole, repeat a table's header in each of its
//! chunks and give every chunk its heading path; plain text has already lost all three.

use serde::{Deserialize, Serialize};

/// One structural unit of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Block {
    /// A heading; `level` 1 is the document's top level (Markdown `#`), at most 6.
    Heading {
        /// 1..=6.
        level: u8,
        /// Its text, on one line.
        text: String,
    },
    /// A paragraph of running text (may hold line breaks).
    Paragraph {
        /// Its text.
        text: String,
    },
    /// One item of a list.
    ListItem {
        /// Numbered (`1.`) or bulleted (`-`).
        ordered: bool,
        /// Nesting depth, 0 for a top-level item.
        depth: u8,
        /// Its text.
        text: String,
    },
    /// A table; `header` is empty when the source marks no header row.
    Table {
        /// Header cells.
        header: Vec<String>,
        /// Body rows.
        rows: Vec<Vec<String>>,
    },
}

/// The blocks of one page (PDF), one sheet (spreadsheets) or the whole document (other formats),
/// in reading order. Extraction delivers documents page by page so memory stays bounded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Page {
    /// 1-based page or sheet number; `None` for formats without pages.
    pub number: Option<u32>,
    /// Its blocks.
    pub blocks: Vec<Block>,
}

impl Block {
    /// Appends this block as Markdown (no trailing blank line).
    pub fn write_markdown(&self, out: &mut String) {
        match self {
            Block::Heading { level, text } => {
                let level = usize::from((*level).clamp(1, 6));
                out.push_str(&"#".repeat(level));
                out.push(' ');
                out.push_str(&one_line(text));
            }
            Block::Paragraph { text } => out.push_str(text.trim()),
            Block::ListItem {
                ordered,
                depth,
                text,
            } => {
                out.push_str(&"  ".repeat(usize::from(*depth)));
                out.push_str(if *ordered { "1. " } else { "- " });
                out.push_str(&one_line(text));
            }
            Block::Table { header, rows } => write_table(header, rows, out),
        }
    }

    /// This block as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        self.write_markdown(&mut s);
        s
    }
}

/// Blocks as Markdown, separated by blank lines (list items of one list by single newlines).
pub fn to_markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    let mut previous_item = false;
    for block in blocks {
        let item = matches!(block, Block::ListItem { .. });
        if !out.is_empty() {
            out.push_str(if item && previous_item { "\n" } else { "\n\n" });
        }
        block.write_markdown(&mut out);
        previous_item = item;
    }
    out
}

/// Plain text as paragraphs (split at blank lines): the model of a document with no known
/// structure.
pub fn paragraphs(text: &str) -> Vec<Block> {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| Block::Paragraph {
            text: p.to_string(),
        })
        .collect()
}

/// Markdown (CommonMark with GFM tables) as blocks: what the chained chunk stage re-chunks
/// stored Markdown with. See [`crate::markdown`].
pub fn from_markdown(text: &str) -> Vec<Block> {
    crate::markdown::parse(text)
}

/// Markdown's table row separator and line breaks would break a cell out of its row.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn write_row(cells: &[String], width: usize, out: &mut String) {
    out.push('|');
    for i in 0..width {
        out.push(' ');
        out.push_str(&cell(cells.get(i).map(String::as_str).unwrap_or("")));
        out.push_str(" |");
    }
}

/// A table's Markdown lines: header, separator, then one line per row (what the chunker keeps
/// whole and repeats the first two of).
pub fn table_lines(header: &[String], rows: &[Vec<String>]) -> Vec<String> {
    let width = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(header.len()))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut lines = Vec::with_capacity(rows.len() + 2);
    // GFM needs a header row; a table without one gets an empty header.
    let mut line = String::new();
    write_row(header, width, &mut line);
    lines.push(line);
    lines.push(format!("|{}", " --- |".repeat(width)));
    for row in rows {
        let mut line = String::new();
        write_row(row, width, &mut line);
        lines.push(line);
    }
    lines
}

fn write_table(header: &[String], rows: &[Vec<String>], out: &mut String) {
    out.push_str(&table_lines(header, rows).join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn markdown_of_each_block() {
        let blocks = vec![
            Block::Heading {
                level: 2,
                text: "第一章\n概述".into(),
            },
            Block::Paragraph {
                text: "正文。".into(),
            },
            Block::ListItem {
                ordered: false,
                depth: 0,
                text: "a".into(),
            },
            Block::ListItem {
                ordered: true,
                depth: 1,
                text: "b".into(),
            },
            Block::Table {
                header: s(&["名称", "值"]),
                rows: vec![s(&["x|y", "1"]), s(&["z"])],
            },
        ];
        assert_eq!(
            to_markdown(&blocks),
            "## 第一章 概述\n\n正文。\n\n- a\n  1. b\n\n| 名称 | 值 |\n| --- | --- |\n| x\\|y | 1 |\n| z |  |"
        );
    }

    #[test]
    fn paragraphs_split_at_blank_lines() {
        assert_eq!(
            paragraphs("a\nb\n\n\nc\n"),
            vec![
                Block::Paragraph {
                    text: "a\nb".into()
                },
                Block::Paragraph { text: "c".into() }
            ]
        );
    }
}
