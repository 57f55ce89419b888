//! HTML into the document model: `h1`–`h6` as headings, `ul`/`ol`/`li` as (nested) list
//! items, tables with their `thead` or all-`th` first row as the header, `pre` as written,
//! other block elements as paragraphs. The `<title>` comes first as a paragraph, as in the text.

use ego_tree::NodeRef;
use scraper::{Html, Node};

use super::html::{is_collapsible, BLOCK, SKIP};
use crate::document::Block;

/// Blocks of an HTML page.
pub fn blocks(html: &str) -> Vec<Block> {
    let doc = Html::parse_document(html);
    let mut w = Walker::default();
    if let Some(title) = doc
        .tree
        .root()
        .descendants()
        .find(|n| matches!(n.value(), Node::Element(e) if e.name() == "title"))
    {
        let t = text_of(title);
        if !t.is_empty() {
            w.blocks.push(Block::Paragraph { text: t });
        }
    }
    w.walk(doc.tree.root());
    w.flush();
    w.blocks
}

#[derive(Default)]
struct Walker {
    blocks: Vec<Block>,
    buf: String,
    /// Ordered flag of each open list.
    lists: Vec<bool>,
    /// Inside an `li` at this list depth: text gathers into one item.
    item: Option<(bool, u8)>,
    pre: bool,
}

impl Walker {
    fn flush(&mut self) {
        let text = if self.pre {
            self.buf.trim_end().trim_start_matches('\n').to_string()
        } else {
            self.buf.trim().to_string()
        };
        self.buf.clear();
        if text.trim().is_empty() {
            return;
        }
        self.blocks.push(match self.item {
            Some((ordered, depth)) => Block::ListItem {
                ordered,
                depth,
                text,
            },
            None => Block::Paragraph { text },
        });
    }

    /// A block boundary: inside a list item only a space (the item stays one block).
    fn boundary(&mut self) {
        if self.item.is_some() {
            self.space();
        } else {
            self.flush();
        }
    }

    fn space(&mut self) {
        if !self.buf.is_empty() && !self.buf.ends_with([' ', '\n']) {
            self.buf.push(' ');
        }
    }

    fn text(&mut self, t: &str) {
        if self.pre {
            self.buf.push_str(t);
            return;
        }
        let mut first = true;
        for word in t.split(is_collapsible) {
            if !first || word.is_empty() {
                self.space();
            }
            first = false;
            if !word.is_empty() {
                self.buf.push_str(&word.replace('\u{a0}', " "));
            }
        }
    }

    fn walk(&mut self, node: NodeRef<'_, Node>) {
        for child in node.children() {
            match child.value() {
                Node::Text(t) => self.text(t),
                Node::Element(e) => {
                    let name = e.name();
                    if SKIP.contains(&name) || name == "title" {
                        continue;
                    }
                    self.element(name, child, e.attr("alt"));
                }
                Node::Document | Node::Fragment => self.walk(child),
                _ => {}
            }
        }
    }

    fn element(&mut self, name: &str, node: NodeRef<'_, Node>, alt: Option<&str>) {
        match name {
            "br" => {
                if self.item.is_some() {
                    self.space();
                } else {
                    self.buf.push('\n');
                }
            }
            "img" => {
                if let Some(alt) = alt {
                    self.text(alt);
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let text = text_of(node);
                if self.item.is_some() {
                    self.space();
                    self.buf.push_str(&text);
                    return;
                }
                self.flush();
                if !text.is_empty() {
                    let level = name[1..].parse().unwrap_or(1);
                    self.blocks.push(Block::Heading { level, text });
                }
            }
            "ul" | "ol" | "menu" => {
                self.flush();
                let outer = self.item.take();
                self.lists.push(name == "ol");
                self.walk(node);
                self.flush();
                self.lists.pop();
                self.item = outer;
            }
            "li" => {
                self.flush();
                let outer = self.item;
                let depth = u8::try_from(self.lists.len().saturating_sub(1)).unwrap_or(u8::MAX);
                self.item = Some((self.lists.last().copied().unwrap_or(false), depth));
                self.walk(node);
                self.flush();
                self.item = outer;
            }
            "table" => {
                self.boundary();
                if self.item.is_some() {
                    // A table inside a list item: its text joins the item.
                    self.space();
                    self.buf.push_str(&text_of(node));
                } else if let Some(t) = table(node) {
                    self.blocks.push(t);
                }
            }
            "pre" => {
                self.boundary();
                let outer = self.pre;
                self.pre = self.item.is_none();
                self.walk(node);
                self.boundary();
                self.pre = outer;
            }
            _ if BLOCK.contains(&name) => {
                self.boundary();
                self.walk(node);
                self.boundary();
            }
            _ => self.walk(node),
        }
    }
}

/// Visible text of a subtree on one line.
fn text_of(node: NodeRef<'_, Node>) -> String {
    let mut out = String::new();
    gather(node, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn gather(node: NodeRef<'_, Node>, out: &mut String) {
    for child in node.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) if SKIP.contains(&e.name()) => {}
            Node::Element(e) if e.name() == "img" => {
                if let Some(alt) = e.attr("alt") {
                    out.push(' ');
                    out.push_str(alt);
                }
            }
            Node::Element(e) => {
                let block = BLOCK.contains(&e.name()) || matches!(e.name(), "br" | "td" | "th");
                if block {
                    out.push(' ');
                }
                gather(child, out);
                if block {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
}

/// A table's rows (from `thead`, `tbody`, `tfoot` or directly), nested tables flattened into
/// their cell; `None` when it has no text.
fn table(node: NodeRef<'_, Node>) -> Option<Block> {
    let mut rows: Vec<(bool, Vec<String>, bool)> = Vec::new();
    collect_rows(node, false, &mut rows);
    if rows
        .iter()
        .all(|(_, cells, _)| cells.iter().all(String::is_empty))
    {
        return None;
    }
    rows.retain(|(_, cells, _)| cells.iter().any(|c| !c.is_empty()));
    let header_row = rows
        .first()
        .is_some_and(|(in_head, _, all_th)| *in_head || *all_th);
    let mut rows: Vec<Vec<String>> = rows.into_iter().map(|(_, cells, _)| cells).collect();
    let header = if header_row {
        rows.remove(0)
    } else {
        Vec::new()
    };
    Some(Block::Table { header, rows })
}

/// (in `thead`, cells, all cells `th`) per row, not descending into nested tables.
fn collect_rows(node: NodeRef<'_, Node>, head: bool, rows: &mut Vec<(bool, Vec<String>, bool)>) {
    for child in node.children() {
        let Node::Element(e) = child.value() else {
            continue;
        };
        match e.name() {
            "thead" => collect_rows(child, true, rows),
            "tbody" | "tfoot" => collect_rows(child, false, rows),
            "tr" => {
                let mut cells = Vec::new();
                let mut all_th = true;
                for cell in child.children() {
                    if let Node::Element(c) = cell.value() {
                        if matches!(c.name(), "td" | "th") {
                            all_th &= c.name() == "th";
                            cells.push(text_of(cell));
                        }
                    }
                }
                if !cells.is_empty() {
                    rows.push((head, cells, all_th));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::to_markdown;

    #[test]
    fn headings_lists_and_tables() {
        let html = "<html><head><title>T</title></head><body><h1>一</h1><p>para <b>bold</b></p>\
            <ul><li>a<ol><li>b</li></ol></li><li><p>c</p></li></ul>\
            <h2>Two</h2><table><thead><tr><th>k</th><th>v</th></tr></thead>\
            <tbody><tr><td>x</td><td>1</td></tr></tbody></table><pre>a\n  b</pre></body></html>";
        assert_eq!(
            to_markdown(&blocks(html)),
            "T\n\n# 一\n\npara bold\n\n- a\n  1. b\n- c\n\n## Two\n\n| k | v |\n| --- | --- |\n| x | 1 |\n\na\n  b"
        );
    }

    #[test]
    fn a_table_without_header_cells_has_no_header() {
        let b = blocks("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>");
        assert_eq!(
            b,
            vec![Block::Table {
                header: vec![],
                rows: vec![vec!["a".into(), "b".into()], vec!["c".into(), "d".into()]]
            }]
        );
    }
}
