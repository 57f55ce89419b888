//! Chunk stage: split text into overlapping pieces on paragraph and sentence boundaries.

use uuid::Uuid;

use crate::document::{to_markdown, Page};
use crate::model::{chunk_id, Chunk};

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

/// A span of the text: byte offsets for slicing, char offsets for budgets and reporting.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    cstart: usize,
    cend: usize,
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
fn split_units(
    text: &str,
    start: usize,
    end: usize,
    cstart: usize,
    max: usize,
    out: &mut Vec<Unit>,
) {
    let piece = &text[start..end];
    let chars = piece.chars().count();
    if chars <= max {
        out.push(Unit {
            start,
            end,
            cstart,
            cend: cstart + chars,
        });
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
                cstart: cstart + sc,
                cend: cstart + ec,
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
                cstart: cstart + sc + from,
                cend: cstart + sc + to,
            });
            from = to;
        }
    }
}

impl Chunker for TextChunker {
    fn chunk(&self, document_id: Uuid, text: &str) -> Vec<Chunk> {
        let max = self.size;
        // Paragraph units (separated by blank lines), each split further if too long.
        let mut units = Vec::new();
        let mut pos = 0usize;
        let mut cpos = 0usize;
        while pos < text.len() {
            let rel_end = text[pos..].find("\n\n").map_or(text.len(), |i| pos + i);
            // Include the separator in the paragraph so offsets stay contiguous.
            let mut end = rel_end;
            while end < text.len() && text.as_bytes()[end] == b'\n' {
                end += 1;
            }
            if text[pos..end].trim().is_empty() {
                cpos += text[pos..end].chars().count();
                pos = end;
                continue;
            }
            split_units(text, pos, end, cpos, max, &mut units);
            cpos += text[pos..end].chars().count();
            pos = end;
        }
        let mut chunks = Vec::new();
        let mut i = 0usize;
        while i < units.len() {
            let mut j = i + 1;
            while j < units.len() && units[j].cend - units[i].cstart <= max {
                j += 1;
            }
            let (a, b) = (units[i], units[j - 1]);
            let body = text[a.start..b.end].trim_end();
            let index = chunks.len();
            chunks.push(Chunk {
                id: chunk_id(document_id, index),
                index,
                text: body.to_string(),
                char_start: a.cstart,
                char_end: a.cstart + body.chars().count(),
                heading_path: Vec::new(),
                page: None,
            });
            if j >= units.len() {
                break;
            }
            // Overlap: step back over whole units that fit in the overlap budget and still leave
            // room for the next new unit.
            let mut k = j;
            while k > i + 1
                && units[j - 1].cend - units[k - 1].cstart <= self.overlap
                && units[j].cend - units[k - 1].cstart <= max
            {
                k -= 1;
            }
            i = k;
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
