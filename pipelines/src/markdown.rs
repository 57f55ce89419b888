//! Markdown into the document model: headings, paragraphs, (nested) list items and GFM
//! tables, through pulldown-cmark (CommonMark). Paragraphs, code blocks and HTML blocks keep
//! their source text, so Markdown that came out of [`crate::document::to_markdown`] parses back
//! to the same blocks and plain text stays as written.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::document::Block;

/// Blocks of a Markdown document, in order.
pub fn parse(text: &str) -> Vec<Block> {
    let mut p = Builder::default();
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    for (event, range) in parser.into_offset_iter() {
        p.event(event, &text[range]);
    }
    p.flush_item();
    p.blocks
}

/// An open table: header, finished rows, the row being read.
type OpenTable = (Vec<String>, Vec<Vec<String>>, Vec<String>);

#[derive(Default)]
struct Builder {
    blocks: Vec<Block>,
    /// Ordered flag of each open list.
    lists: Vec<bool>,
    /// Text of the innermost open list item not yet emitted.
    item: Option<String>,
    /// Inline text being gathered (heading, table cell, list item).
    inline: Option<String>,
    heading: Option<u8>,
    /// Open table: header, rows, current row.
    table: Option<OpenTable>,
    /// Inside a code or HTML block already taken whole from the source.
    verbatim: usize,
}

impl Builder {
    fn push_inline(&mut self, s: &str) {
        if self.verbatim > 0 {
            return;
        }
        if let Some(buf) = self.inline.as_mut() {
            buf.push_str(s);
        } else if let Some(item) = self.item.as_mut() {
            item.push_str(s);
        }
    }

    /// A paragraph-level block: inside a list item it joins the item's text.
    fn emit(&mut self, block: Block, source: &str) {
        if let Some(item) = self.item.as_mut() {
            if !item.trim().is_empty() {
                item.push(' ');
            }
            item.push_str(source.trim());
            return;
        }
        self.blocks.push(block);
    }

    fn flush_item(&mut self) {
        if let Some(text) = self.item.take() {
            let text = text.trim().to_string();
            if !text.is_empty() {
                self.blocks.push(Block::ListItem {
                    ordered: self.lists.last().copied().unwrap_or(false),
                    depth: u8::try_from(self.lists.len().saturating_sub(1)).unwrap_or(u8::MAX),
                    text,
                });
            }
        }
    }

    fn event(&mut self, event: Event<'_>, source: &str) {
        match event {
            Event::Start(tag) => self.start(tag, source),
            Event::End(tag) => self.end(tag),
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                self.push_inline(&t)
            }
            Event::SoftBreak | Event::HardBreak => self.push_inline(" "),
            Event::Html(_) | Event::InlineHtml(_) | Event::FootnoteReference(_) => {}
            Event::Rule | Event::TaskListMarker(_) => {}
        }
    }

    fn start(&mut self, tag: Tag<'_>, source: &str) {
        match tag {
            Tag::Paragraph if self.item.is_none() && self.inline.is_none() => {
                // Taken whole from the source (emphasis and links as written).
                let text = source.trim().to_string();
                if !text.is_empty() {
                    self.blocks.push(Block::Paragraph { text });
                }
                self.verbatim += 1;
            }
            Tag::CodeBlock(_) | Tag::HtmlBlock => {
                let text = source.trim_end().to_string();
                if !text.trim().is_empty() {
                    self.emit(Block::Paragraph { text: text.clone() }, &text);
                }
                self.verbatim += 1;
            }
            Tag::Heading { level, .. } => {
                self.flush_item();
                self.heading = Some(heading_level(level));
                self.inline = Some(String::new());
            }
            Tag::List(start) => {
                self.flush_item();
                self.lists.push(start.is_some());
            }
            Tag::Item => {
                self.flush_item();
                self.item = Some(String::new());
            }
            Tag::Table(_) => self.table = Some((Vec::new(), Vec::new(), Vec::new())),
            Tag::TableCell => self.inline = Some(String::new()),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                if self.item.is_none() && self.inline.is_none() {
                    self.verbatim = self.verbatim.saturating_sub(1);
                } else {
                    self.push_inline(" ");
                }
            }
            TagEnd::CodeBlock | TagEnd::HtmlBlock => {
                self.verbatim = self.verbatim.saturating_sub(1)
            }
            TagEnd::Heading(_) => {
                let text = self.inline.take().unwrap_or_default();
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if let (Some(level), false) = (self.heading.take(), text.is_empty()) {
                    self.blocks.push(Block::Heading { level, text });
                }
            }
            TagEnd::Item => self.flush_item(),
            TagEnd::List(_) => {
                self.flush_item();
                self.lists.pop();
            }
            TagEnd::TableCell => {
                let cell = self.inline.take().unwrap_or_default().trim().to_string();
                if let Some((_, _, row)) = self.table.as_mut() {
                    row.push(cell);
                }
            }
            TagEnd::TableHead => {
                if let Some((header, _, row)) = self.table.as_mut() {
                    *header = std::mem::take(row);
                }
            }
            TagEnd::TableRow => {
                if let Some((_, rows, row)) = self.table.as_mut() {
                    rows.push(std::mem::take(row));
                }
            }
            TagEnd::Table => {
                if let Some((header, rows, _)) = self.table.take() {
                    self.flush_item();
                    self.blocks.push(Block::Table { header, rows });
                }
            }
            _ => {}
        }
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::to_markdown;

    #[test]
    fn round_trips_the_model() {
        let md = "# 标题\n\n正文 *强调* 第一段。\n\n## Sub\n\n- a\n  1. b\n- c\n\n| 名称 | 值 |\n| --- | --- |\n| x\\|y | 1 |\n| z |  |";
        let blocks = parse(md);
        assert_eq!(
            blocks[..3],
            [
                Block::Heading {
                    level: 1,
                    text: "标题".into()
                },
                Block::Paragraph {
                    text: "正文 *强调* 第一段。".into()
                },
                Block::Heading {
                    level: 2,
                    text: "Sub".into()
                },
            ]
        );
        assert_eq!(
            blocks[4],
            Block::ListItem {
                ordered: true,
                depth: 1,
                text: "b".into()
            }
        );
        assert_eq!(to_markdown(&blocks), md);
    }

    #[test]
    fn plain_text_stays_paragraphs() {
        let t = "第一段。中文文本。\n\n第二段\nline two";
        assert_eq!(
            parse(t),
            vec![
                Block::Paragraph {
                    text: "第一段。中文文本。".into()
                },
                Block::Paragraph {
                    text: "第二段\nline two".into()
                }
            ]
        );
    }
}
