//! HTML to text through a real HTML5 parser (html5ever, via scraper): entities decoded by the
//! parser, `<script>`/`<style>`/`<template>`/... dropped, block elements as paragraphs, `<br>`
//! and table rows as lines, cells tab-separated, `<pre>` kept as written. The encoding comes
//! from the BOM, else `<meta charset>` / `http-equiv` in the first bytes, else UTF-8 (GB18030
//! or Windows-1252 when the bytes are not UTF-8).

use ego_tree::NodeRef;
use scraper::{Html, Node};

/// Elements whose content is never visible text.
pub(super) const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "head", "iframe", "object", "canvas",
    "select", "button",
];
/// Elements that start and end a paragraph.
pub(super) const BLOCK: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "dl",
    "li",
    "dd",
    "dt",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "main",
    "nav",
    "aside",
    "figure",
    "figcaption",
    "form",
    "address",
    "hr",
    "fieldset",
    "details",
    "summary",
    "caption",
    "body",
];

/// Decodes HTML bytes to a string, honouring a BOM or the page's declared charset.
pub fn decode(bytes: &[u8]) -> String {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return enc
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned();
    }
    if let Some(enc) = declared_charset(&bytes[..bytes.len().min(4096)]) {
        // A page saying UTF-16 without a BOM is mislabelled ASCII-compatible text (WHATWG).
        if enc != encoding_rs::UTF_16LE && enc != encoding_rs::UTF_16BE {
            return enc.decode_without_bom_handling(bytes).0.into_owned();
        }
    }
    super::detect::decode_text(bytes)
}

fn declared_charset(head: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<meta") {
        rest = &rest[i + 5..];
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        if let Some(j) = tag.find("charset") {
            let value = tag[j + 7..]
                .trim_start()
                .strip_prefix('=')?
                .trim_start()
                .trim_start_matches(['"', '\'']);
            let label: String = value
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
                .collect();
            if let Some(enc) = encoding_rs::Encoding::for_label(label.as_bytes()) {
                return Some(enc);
            }
        }
    }
    None
}

/// Visible text of an HTML page (the `<title>` first, as its own paragraph).
pub fn to_text(html: &str) -> String {
    let doc = Html::parse_document(html);
    let mut w = Writer::default();
    if let Some(title) = doc
        .tree
        .root()
        .descendants()
        .find(|n| matches!(n.value(), Node::Element(e) if e.name() == "title"))
    {
        let mut t = String::new();
        for d in title.descendants() {
            if let Node::Text(text) = d.value() {
                t.push_str(text);
            }
        }
        w.text(&t, false);
        w.brk(Break::Paragraph);
    }
    walk(doc.tree.root(), &mut w, false);
    w.out
}

fn walk(node: NodeRef<'_, Node>, w: &mut Writer, pre: bool) {
    for child in node.children() {
        match child.value() {
            Node::Text(t) => w.text(t, pre),
            Node::Element(e) => {
                let name = e.name();
                if SKIP.contains(&name) || name == "title" {
                    continue;
                }
                match name {
                    "br" => w.brk(Break::Line),
                    "img" => {
                        if let Some(alt) = e.attr("alt") {
                            w.text(alt, false);
                        }
                    }
                    "tr" => {
                        w.brk(Break::Line);
                        walk(child, w, pre);
                        w.brk(Break::Line);
                    }
                    "td" | "th" => {
                        walk(child, w, pre);
                        w.brk(Break::Tab);
                    }
                    _ if BLOCK.contains(&name) => {
                        w.brk(Break::Paragraph);
                        walk(child, w, pre || name == "pre");
                        w.brk(Break::Paragraph);
                    }
                    _ => walk(child, w, pre),
                }
            }
            Node::Document | Node::Fragment => walk(child, w, pre),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Break {
    None,
    Space,
    Tab,
    Line,
    Paragraph,
}

/// Accumulates text, holding the strongest pending separator until the next visible text.
struct Writer {
    out: String,
    pending: Break,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            out: String::new(),
            pending: Break::None,
        }
    }
}

impl Writer {
    fn brk(&mut self, b: Break) {
        if b > self.pending {
            self.pending = b;
        }
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.out.push_str(match self.pending {
                Break::None => "",
                Break::Space => " ",
                Break::Tab => "\t",
                Break::Line => "\n",
                Break::Paragraph => "\n\n",
            });
        }
        self.pending = Break::None;
    }

    fn text(&mut self, text: &str, pre: bool) {
        if pre {
            if !text.is_empty() {
                self.flush();
                self.out.push_str(text);
            }
            return;
        }
        let mut words = text.split(is_collapsible).peekable();
        let mut first = true;
        while let Some(word) = words.next() {
            if word.is_empty() {
                if !first || words.peek().is_some() {
                    self.brk(Break::Space);
                }
                first = false;
                continue;
            }
            if !first {
                self.brk(Break::Space);
            }
            self.flush();
            self.out.push_str(&word.replace('\u{a0}', " "));
            first = false;
        }
    }
}

/// HTML's collapsible white space (not NBSP, not the ideographic space).
pub(super) fn is_collapsible(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_visible_text_only() {
        let html = "<!DOCTYPE html><html><head><title>T &amp; C</title><style>p{}</style>\
                    <script>var x = '<p>';</script></head><body><h1>标题</h1><p>第一段&nbsp;text\
                    <!-- hidden --> &#20013;&#x6587;</p><table><tr><td>a</td><td>b</td></tr></table></body></html>";
        let t = to_text(html);
        assert!(t.starts_with("T & C\n\n"), "{t}");
        assert!(t.contains("标题"));
        assert!(t.contains("第一段 text 中文"), "{t}");
        assert!(t.contains("a\tb"), "{t}");
        assert!(!t.contains("var x"));
        assert!(!t.contains("hidden"));
        assert!(!t.contains("p{}"));
    }

    #[test]
    fn multibyte_text_next_to_markup_and_entities() {
        // The old byte scanner sliced inside a character here.
        let t =
            to_text("<p>日本語&amp;テキスト<b>太字</b>、<i>斜体</i>&copy;&#x1F600;<br>次の行</p>");
        assert_eq!(t, "日本語&テキスト太字、斜体©😀\n次の行");
    }

    #[test]
    fn blocks_become_paragraphs() {
        let t =
            to_text("<div>one <span>two</span></div><p>three</p>four<ul><li>a</li><li>b</li></ul>");
        assert_eq!(t, "one two\n\nthree\n\nfour\n\na\n\nb");
    }

    #[test]
    fn meta_charset_and_bom_are_honoured() {
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("<p>日本語のページ</p>");
        let mut page = b"<html><head><meta charset=\"Shift_JIS\"></head><body>".to_vec();
        page.extend_from_slice(&sjis);
        assert!(to_text(&decode(&page)).contains("日本語のページ"));
        let (gbk, _, _) = encoding_rs::GBK.encode("中文网页");
        let mut page =
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\">".to_vec();
        page.extend_from_slice(&gbk);
        assert!(to_text(&decode(&page)).contains("中文网页"));
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice("<p>한국어</p>".as_bytes());
        assert_eq!(to_text(&decode(&bom)), "한국어");
    }
}
