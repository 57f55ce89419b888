//! The structure-aware chunking of [`TextChunker`]: blocks become units (a heading, a
//! paragraph or its sentences, a list item, a table's header with its first row, each further
//! table row); units are packed into chunks by the character budget. A heading always starts a
//! new chunk (and overlap never crosses it), a table row is never split, and a chunk that
//! starts inside a table begins with the table's header again. Chunks go out as soon as the
//! next unit shows they are complete, so a document is held a chunk at a time.

use std::sync::Arc;

use uuid::Uuid;

use super::{split_units, ChunkStream, TextChunker};
use crate::document::{table_lines, Block, Page};
use crate::model::{chunk_id, Chunk};

/// One unbreakable piece of a chunk.
#[derive(Debug)]
struct Unit {
    /// Markdown, possibly with trailing whitespace (sentences of a paragraph).
    text: String,
    /// Joins it to the previous unit in a chunk: "\n\n", "\n" or "" (next sentence).
    sep: &'static str,
    /// Characters of `text`.
    chars: usize,
    /// Offset in the document's Markdown.
    start: usize,
    /// A heading: starts a chunk.
    heading: bool,
    /// Set on a table row after the first: the table's header and separator lines, put back
    /// in front when a chunk starts at this row.
    table_header: Option<Arc<String>>,
    /// Titles of the enclosing headings (its own included for a heading).
    path: Arc<Vec<String>>,
    page: Option<u32>,
}

/// [`TextChunker::stream`]'s stream.
pub(super) struct Structured {
    size: usize,
    overlap: usize,
    document_id: Uuid,
    /// (level, title) of the open headings.
    headings: Vec<(u8, String)>,
    path: Arc<Vec<String>>,
    /// Units not yet emitted (plus those kept for overlap), `first_new` the first not yet in
    /// any chunk.
    units: Vec<Unit>,
    first_new: usize,
    index: usize,
    /// Characters of the document's Markdown so far.
    pos: usize,
    previous_item: Option<bool>,
}

impl Structured {
    pub(super) fn new(chunker: &TextChunker, document_id: Uuid) -> Self {
        Structured {
            size: chunker.size,
            overlap: chunker.overlap,
            document_id,
            headings: Vec::new(),
            path: Arc::new(Vec::new()),
            units: Vec::new(),
            first_new: 0,
            index: 0,
            pos: 0,
            previous_item: None,
        }
    }

    fn block(&mut self, block: &Block, page: Option<u32>, out: &mut Vec<Chunk>) {
        let item = matches!(block, Block::ListItem { .. });
        let sep = match self.previous_item {
            None => "",
            Some(true) if item => "\n",
            Some(_) => "\n\n",
        };
        self.previous_item = Some(item);
        self.pos += sep.chars().count();
        match block {
            Block::Heading { level, text } => {
                while self.headings.last().is_some_and(|(l, _)| l >= level) {
                    self.headings.pop();
                }
                let title = text.split_whitespace().collect::<Vec<_>>().join(" ");
                self.headings.push((*level, title));
                self.path = Arc::new(self.headings.iter().map(|(_, t)| t.clone()).collect());
                self.unit(block.to_markdown(), sep, true, None, page, out);
            }
            Block::Paragraph { .. } | Block::ListItem { .. } => {
                let md = block.to_markdown();
                let mut pieces = Vec::new();
                split_units(&md, 0, md.len(), self.size, &mut pieces);
                for (k, p) in pieces.iter().enumerate() {
                    let sep = if k == 0 { sep } else { "" };
                    self.unit(md[p.start..p.end].to_string(), sep, false, None, page, out);
                }
            }
            Block::Table { header, rows } => {
                let lines = table_lines(header, rows);
                let head = Arc::new(lines[..2].join("\n"));
                let mut first = head.as_str().to_string();
                if let Some(row) = lines.get(2) {
                    first.push('\n');
                    first.push_str(row);
                }
                self.unit(first, sep, false, None, page, out);
                for row in lines.iter().skip(3) {
                    self.unit(row.clone(), "\n", false, Some(head.clone()), page, out);
                }
            }
        }
    }

    fn unit(
        &mut self,
        text: String,
        sep: &'static str,
        heading: bool,
        table_header: Option<Arc<String>>,
        page: Option<u32>,
        out: &mut Vec<Chunk>,
    ) {
        let chars = text.chars().count();
        let unit = Unit {
            text,
            sep,
            chars,
            start: self.pos,
            heading,
            table_header,
            path: self.path.clone(),
            page,
        };
        self.pos += chars;
        self.units.push(unit);
        // Emit every chunk the new unit completes.
        while self.first_new < self.units.len() {
            let Some(end) = self.fits(false) else { break };
            self.emit(end, out);
        }
    }

    /// Characters of units[from..to] as one chunk (with a repeated table header).
    fn length(&self, from: usize, to: usize) -> usize {
        let mut n = self.units[from]
            .table_header
            .as_ref()
            .map_or(0, |h| h.chars().count() + 1);
        for (k, u) in self.units[from..to].iter().enumerate() {
            if k > 0 {
                n += u.sep.len();
            }
            n += u.chars;
        }
        n
    }

    /// The end of the chunk starting at unit 0 if it is complete (the next unit would not fit
    /// or starts a section), or at the end of the document when `last`.
    fn fits(&self, last: bool) -> Option<usize> {
        let mut j = self.first_new.max(1);
        // Headings at the start of a chunk stay together with what follows them.
        let mut only_headings = self.units[..j].iter().all(|u| u.heading);
        while j < self.units.len() {
            let u = &self.units[j];
            if (u.heading && !only_headings) || self.length(0, j + 1) > self.size {
                return Some(j);
            }
            only_headings &= u.heading;
            j += 1;
        }
        last.then_some(j)
    }

    fn emit(&mut self, end: usize, out: &mut Vec<Chunk>) {
        let first = &self.units[0];
        let mut text = String::new();
        if let Some(h) = &first.table_header {
            text.push_str(h);
            text.push('\n');
        }
        let header_chars = text.chars().count();
        for (k, u) in self.units[..end].iter().enumerate() {
            if k > 0 {
                text.push_str(u.sep);
            }
            text.push_str(&u.text);
        }
        let text = text.trim_end().to_string();
        let body_chars = text.chars().count() - header_chars;
        let last = &self.units[end - 1];
        out.push(Chunk {
            id: chunk_id(self.document_id, self.index),
            index: self.index,
            char_start: first.start,
            char_end: first.start + body_chars,
            heading_path: last.path.as_ref().clone(),
            page: first.page,
            text,
        });
        self.index += 1;
        // Overlap: whole units from the end of this chunk that fit the overlap budget, leave
        // room for the next new unit, and do not cross a heading.
        let next_heading = self.units.get(end).is_none_or(|u| u.heading);
        let mut k = end;
        if !next_heading {
            while k > 1
                && !self.units[k - 1].heading
                && self.length(k - 1, end) <= self.overlap
                && self.length(k - 1, end + 1) <= self.size
            {
                k -= 1;
            }
        }
        self.units.drain(..k);
        self.first_new = end - k;
    }
}

impl ChunkStream for Structured {
    fn push(&mut self, page: &Page, out: &mut Vec<Chunk>) {
        for block in &page.blocks {
            self.block(block, page.number, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Chunk>) {
        while self.first_new < self.units.len() {
            let Some(end) = self.fits(true) else { break };
            self.emit(end, out);
        }
        self.units.clear();
        self.first_new = 0;
    }
}
