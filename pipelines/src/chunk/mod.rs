//! Chunk stage: split a document into overlapping pieces on its structure (headings, tables,
//! list items, paragraphs), then on sentence boundaries.

mod stream;

use uuid::Uuid;

use crate::document::{to_markdown, Page};
use crate::model::Chunk;

/// Splits a document's text into chunks. A trait so token-based or semantic chunkers can stand in.
pub trait Chunker: Send + Sync {
    /// Chunks `text` of `document_id`. Must be deterministic: the same input gives the same
    /// chunks with the same ids, which is what makes re-processing replace instead of duplicate.
    fn chunk(&self, document_id: Uuid, text: &str) -> Vec<Chunk>;

    /// Chunks a document delivered page by page (see [`ChunkStream`]). The default gathers the
    /// pages as Markdown and chunks it at the end; a structure-aware chunker emits chunks as
    /// soon as they are complete, so memory stays bounded by a chunk, not by the document.
    fn stream(&self, document_id: Uuid) -> Box<dyn ChunkStream + '_> {
        Box::new(Gathered {
            chunker: self,
            document_id,
            markdown: String::new(),
        })
    }
}

/// An incremental chunking of one document. Chunk indexes count from 0 across the whole
/// document and ids follow [`chunk_id`], as with [`Chunker::chunk`].
pub trait ChunkStream: Send {
    /// Takes the next page; appends the chunks it completed to `out`.
    fn push(&mut self, page: &Page, out: &mut Vec<Chunk>);
    /// The document ended; appends the remaining chunks to `out`.
    fn finish(&mut self, out: &mut Vec<Chunk>);
}

/// [`Chunker::stream`]'s default: the whole document, chunked at the end.
struct Gathered<'a, C: Chunker + ?Sized> {
    chunker: &'a C,
    document_id: Uuid,
    markdown: String,
}

impl<C: Chunker + ?Sized> ChunkStream for Gathered<'_, C> {
    fn push(&mut self, page: &Page, _out: &mut Vec<Chunk>) {
        let text = to_markdown(&page.blocks);
        if text.is_empty() {
            return;
        }
        if !self.markdown.is_empty() {
            self.markdown.push_str("\n\n");
        }
        self.markdown.push_str(&text);
    }

    fn finish(&mut self, out: &mut Vec<Chunk>) {
        let markdown = std::mem::take(&mut self.markdown);
        out.extend(self.chunker.chunk(self.document_id, &markdown));
    }
}

/// Character-budget chunker: paragraphs first, then sentences (Latin and CJK punctuation), then
/// a hard split at whitespace or at any character for unbroken CJK text.
#[derive(Debug, Clone, Copy)]
pub struct TextChunker {
    /// Maximum characters per chunk.
    pub size: usize,
    /// Characters of the previous chunk repeated at the start of the next (whole sentences or
    /// paragraphs only, so a chunk never starts mid-sentence because of overlap).
    pub overlap: usize,
}

impl TextChunker {
    /// A chunker with a sane floor on size and overlap below size.
    pub fn new(size: usize, overlap: usize) -> Self {
        let size = size.max(16);
        TextChunker {
            size,
            overlap: overlap.min(size / 2),
        }
    }
}

/// A span of the text: byte offsets.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | ';' | '。' | '！' | '？' | '；' | '…' | '\n'
    )
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '…' | '\n')
}

/// Splits `text[start..end]` into units no longer than `max` characters.
fn split_units(text: &str, start: usize, end: usize, max: usize, out: &mut Vec<Unit>) {
    let piece = &text[start..end];
    let chars = piece.chars().count();
    if chars <= max {
        out.push(Unit { start, end });
        return;
    }
    // Sentences.
    let mut sentences: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut s_byte = 0usize;
    let mut s_char = 0usize;
    let mut ci = 0usize;
    let mut iter = piece.char_indices().peekable();
    while let Some((bi, c)) = iter.next() {
        ci += 1;
        if is_terminator(c) {
            let next = iter.peek().map(|&(_, n)| n);
            let boundary = is_cjk_terminator(c) || next.is_none_or(char::is_whitespace);
            if boundary {
                // Swallow following whitespace into this sentence.
                let mut e = bi + c.len_utf8();
                while let Some(&(nb, n)) = iter.peek() {
                    if n.is_whitespace() {
                        e = nb + n.len_utf8();
                        ci += 1;
                        iter.next();
                    } else {
                        break;
                    }
                }
                sentences.push((s_byte, e, s_char, ci));
                s_byte = e;
                s_char = ci;
            }
        }
    }
    if s_byte < piece.len() {
        sentences.push((s_byte, piece.len(), s_char, ci));
    }
    for (sb, eb, sc, ec) in sentences {
        if ec - sc <= max {
            out.push(Unit {
                start: start + sb,
                end: start + eb,
            });
            continue;
        }
        // Hard split, preferring the last whitespace in the window.
        let sent = &piece[sb..eb];
        let idx: Vec<usize> = sent.char_indices().map(|(i, _)| i).collect();
        let n = idx.len();
        let mut from = 0usize;
        while from < n {
            let mut to = (from + max).min(n);
            if to < n {
                if let Some(ws) = (from + max / 2..to)
                    .rev()
                    .find(|&k| sent[idx[k]..].starts_with(char::is_whitespace))
                {
                    to = ws + 1;
                }
            }
            let b0 = idx[from];
            let b1 = if to < n { idx[to] } else { sent.len() };
            out.push(Unit {
                start: start + sb + b0,
                end: start + sb + b1,
            });
            from = to;
        }
    }
}

impl Chunker for TextChunker {
    /// `text` is read as Markdown (plain text is paragraphs) and chunked by structure.
    fn chunk(&self, document_id: Uuid, text: &str) -> Vec<Chunk> {
        let page = Page {
            number: None,
            blocks: crate::document::from_markdown(text),
        };
        let mut out = Vec::new();
        let mut stream = self.stream(document_id);
        stream.push(&page, &mut out);
        stream.finish(&mut out);
        out
    }

    fn stream(&self, document_id: Uuid) -> Box<dyn ChunkStream + '_> {
        Box::new(stream::Structured::new(self, document_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Block;
    use crate::model::chunk_id;

    fn doc() -> Uuid {
        Uuid::from_u128(42)
    }

    #[test]
    fn short_text_is_one_chunk() {
        let c = TextChunker::new(100, 10).chunk(doc(), "Hello world.\n\nSecond paragraph.");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "Hello world.\n\nSecond paragraph.");
        assert_eq!(c[0].char_start, 0);
    }

    #[test]
    fn splits_on_paragraphs_with_limits_and_is_deterministic() {
        let text = (0..20)
            .map(|i| format!("Paragraph {i} has a few words. And a second sentence here."))
            .collect::<Vec<_>>()
            .join("\n\n");
        let ch = TextChunker::new(200, 60);
        let a = ch.chunk(doc(), &text);
        let b = ch.chunk(doc(), &text);
        assert_eq!(a, b);
        assert!(a.len() > 3);
        for c in &a {
            assert!(c.text.chars().count() <= 200, "{}", c.text.len());
            assert!(
                c.text.starts_with("Paragraph") || c.text.starts_with("And"),
                "{:?}",
                c.text
            );
        }
        // Every paragraph is covered.
        for i in 0..20 {
            assert!(a
                .iter()
                .any(|c| c.text.contains(&format!("Paragraph {i} "))));
        }
        // Ids are unique and stable per index.
        assert_eq!(a[1].id, chunk_id(doc(), 1));
        assert_ne!(a[0].id, a[1].id);
    }

    #[test]
    fn overlap_repeats_whole_units() {
        let text = "One one one. Two two two. Three three three. Four four four. Five five five.";
        let c = TextChunker::new(40, 14).chunk(doc(), text);
        assert!(c.len() >= 3, "{c:?}");
        assert!(c[1].text.starts_with("Two") || c[1].text.starts_with("Three"));
        // Second chunk starts with the last sentence of the first (overlap).
        let last_of_first = c[0].text.rsplit(". ").next().unwrap().trim_end_matches('.');
        assert!(c[1].text.starts_with(last_of_first), "{c:?}");
    }

    #[test]
    fn cjk_sentences_and_unbroken_text() {
        let text = "这是第一句。这是第二句！这是第三句？".repeat(10);
        let c = TextChunker::new(40, 0).chunk(doc(), &text);
        let joined: String = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(joined, text);
        for ch in &c {
            assert!(ch.text.chars().count() <= 40);
            assert!(ch.text.ends_with(['。', '！', '？']), "{}", ch.text);
        }
        let unbroken = "字".repeat(100);
        let c = TextChunker::new(30, 0).chunk(doc(), &unbroken);
        assert_eq!(c.len(), 4);
        assert_eq!(c.iter().map(|c| c.text.chars().count()).sum::<usize>(), 100);
    }

    #[test]
    fn offsets_point_into_the_text() {
        let text = "Alpha beta.\n\nGamma delta epsilon. Zeta eta theta.\n\nIota kappa.";
        let chars: Vec<char> = text.chars().collect();
        for c in TextChunker::new(20, 5).chunk(doc(), text) {
            let slice: String = chars[c.char_start..c.char_end].iter().collect();
            assert_eq!(slice, c.text);
        }
    }

    fn streamed(size: usize, overlap: usize, pages: &[Page]) -> Vec<Chunk> {
        let chunker = TextChunker::new(size, overlap);
        let mut stream = chunker.stream(doc());
        let mut out = Vec::new();
        for p in pages {
            stream.push(p, &mut out);
        }
        stream.finish(&mut out);
        out
    }

    #[test]
    fn headings_start_chunks_and_give_the_path() {
        let blocks = crate::document::from_markdown(
            "# 第一章\n\n引言。\n\n## 1.1 背景\n\n背景段落。\n\n# 第二章\n\n结论。",
        );
        let c = streamed(
            1000,
            100,
            &[Page {
                number: Some(3),
                blocks,
            }],
        );
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "# 第一章\n\n引言。",
                "## 1.1 背景\n\n背景段落。",
                "# 第二章\n\n结论。"
            ]
        );
        assert_eq!(c[1].heading_path, ["第一章", "1.1 背景"]);
        assert_eq!(c[2].heading_path, ["第二章"]);
        assert!(c.iter().all(|c| c.page == Some(3)));
        assert_eq!(c[2].id, chunk_id(doc(), 2));
    }

    #[test]
    fn tables_split_between_rows_with_the_header_repeated() {
        let rows: Vec<Vec<String>> = (0..30)
            .map(|i| vec![format!("row {i}"), format!("value {i}")])
            .collect();
        let page = Page {
            number: Some(1),
            blocks: vec![
                Block::Heading {
                    level: 1,
                    text: "Sheet1".into(),
                },
                Block::Table {
                    header: vec!["name".into(), "value".into()],
                    rows,
                },
            ],
        };
        let c = streamed(200, 40, &[page]);
        assert!(c.len() > 3, "{c:?}");
        let mut seen = std::collections::BTreeSet::new();
        for ch in &c {
            assert_eq!(ch.heading_path, ["Sheet1"]);
            let table = ch.text.trim_start_matches("# Sheet1\n\n");
            assert!(
                table.starts_with("| name | value |\n| --- | --- |\n| row "),
                "{table}"
            );
            for line in table.lines().skip(2) {
                assert!(line.starts_with("| row ") && line.ends_with(" |"), "{line}");
                seen.insert(line.to_string());
            }
        }
        assert_eq!(seen.len(), 30);
    }

    #[test]
    fn chunks_come_out_while_pages_arrive() {
        let chunker = TextChunker::new(100, 0);
        let mut stream = chunker.stream(doc());
        let mut out = Vec::new();
        for n in 1..=5 {
            let blocks = crate::document::paragraphs(&"Ein Satz hier. ".repeat(5));
            stream.push(
                &Page {
                    number: Some(n),
                    blocks,
                },
                &mut out,
            );
        }
        assert!(out.len() >= 3, "{out:?}");
        stream.finish(&mut out);
        assert_eq!(out.last().map(|c| c.page), Some(Some(5)));
        let idx: Vec<usize> = out.iter().map(|c| c.index).collect();
        assert_eq!(idx, (0..out.len()).collect::<Vec<_>>());
    }
}
