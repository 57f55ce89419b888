//! A PDF page's blocks from its characters' positions and fonts (what PDFium's text page gives
//! per character): lines, then paragraphs (vertical gaps, first-line indents, short last
//! lines), headings (the outline's titles where the document has one; otherwise lines set
//! clearly larger than the document's body text), bulleted list items, and simple tables (runs
//! of at least three lines split into the same number of columns at the same places).
//!
//! Conservative on purpose: a paragraph taken for a heading or a table costs retrieval less
//! than a table of prose, so every rule needs more than one signal.

use std::collections::HashMap;

use crate::document::Block;

/// One character of the text page.
#[derive(Debug, Clone, Copy)]
pub struct Char {
    /// The character; `\n` ends a line (PDFium generates line breaks).
    pub c: char,
    /// Font size in points.
    pub size: f32,
    /// Font weight 600 or more.
    pub bold: bool,
    /// Loose box: left, bottom, right, top (PDF user space, y up).
    pub l: f32,
    /// Bottom.
    pub b: f32,
    /// Right.
    pub r: f32,
    /// Top.
    pub t: f32,
    /// PDFium made it up (a space or line break between runs): no position.
    pub generated: bool,
}

/// The document's outline (bookmarks): titles by 0-based page index, with their level.
#[derive(Debug, Default)]
pub struct Outline {
    by_page: HashMap<u32, Vec<(u8, String)>>,
    /// Deepest level in the outline.
    pub depth: u8,
}

impl Outline {
    /// Adds a title at `level` (1 = top) pointing at `page`.
    pub fn add(&mut self, page: u32, level: u8, title: &str) {
        let key = norm(title);
        if key.is_empty() {
            return;
        }
        self.depth = self.depth.max(level);
        self.by_page.entry(page).or_default().push((level, key));
    }

    /// Whether the document has an outline.
    pub fn is_empty(&self) -> bool {
        self.by_page.is_empty()
    }

    /// The level of the outline entry on `page` (or the page before/after: destinations are
    /// often off by one) that `line` is, or starts (a title wrapped over lines).
    fn level_of(&self, page: u32, line: &str) -> Option<(u8, bool)> {
        let key = norm(line);
        if key.chars().count() < 2 {
            return None;
        }
        for p in [Some(page), page.checked_sub(1), page.checked_add(1)]
            .into_iter()
            .flatten()
        {
            for (level, title) in self.by_page.get(&p).into_iter().flatten() {
                if *title == key {
                    return Some((*level, true));
                }
                // The outline title without the printed number ("Introduction" for "1.1
                // Introduction").
                if key.ends_with(title.as_str())
                    && key[..key.len() - title.len()]
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '章' | '节' | '第'))
                {
                    return Some((*level, true));
                }
                if title.starts_with(key.as_str()) && key.chars().count() >= 4 {
                    return Some((*level, false));
                }
            }
        }
        None
    }
}

/// Lower-cased text without spaces or punctuation, for matching titles to lines.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '章' | '节' | '第'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Running histogram of font sizes over the document's text so far: the body size is its mode.
#[derive(Debug, Default)]
pub struct BodySize {
    hist: HashMap<u32, usize>,
}

impl BodySize {
    fn add(&mut self, size: f32, chars: usize) {
        *self.hist.entry(key(size)).or_default() += chars;
    }

    fn get(&self) -> f32 {
        self.hist
            .iter()
            .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
            .map_or(10.0, |(k, _)| *k as f32 / 4.0)
    }
}

fn key(size: f32) -> u32 {
    (size * 4.0).round().max(0.0) as u32
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    size: f32,
    bold: bool,
    l: f32,
    b: f32,
    r: f32,
    t: f32,
    chars: usize,
    /// Ends with a soft hyphen: joins the next line without a space.
    hyphen: bool,
    /// Left edges of its cells (runs of text separated by a wide gap).
    cells: Vec<(f32, String)>,
}

fn lines(chars: &[Char]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut cur: Vec<&Char> = Vec::new();
    for ch in chars {
        if ch.c == '\n' {
            out.extend(line(&cur));
            cur.clear();
        } else if ch.c != '\r' {
            cur.push(ch);
        }
    }
    out.extend(line(&cur));
    out
}

fn line(chars: &[&Char]) -> Option<Line> {
    let placed: Vec<&&Char> = chars
        .iter()
        .filter(|c| !c.generated && !c.c.is_whitespace() && !is_marker(c.c) && c.r > c.l)
        .collect();
    if placed.is_empty() {
        return None;
    }
    let mut sizes: HashMap<u32, usize> = HashMap::new();
    for c in &placed {
        *sizes.entry(key(c.size)).or_default() += 1;
    }
    let size = sizes
        .iter()
        .max_by_key(|(k, n)| (**n, **k))
        .map_or(10.0, |(k, _)| *k as f32 / 4.0);
    let mut text = String::new();
    let mut cells: Vec<(f32, String)> = Vec::new();
    let mut last_r: Option<f32> = None;
    let mut hyphen = false;
    for c in chars {
        if is_marker(c.c) {
            hyphen = true;
            continue;
        }
        hyphen = false;
        if c.c.is_control() {
            text.push(' ');
            continue;
        }
        text.push(c.c);
        if c.generated || c.c.is_whitespace() || c.r <= c.l {
            continue;
        }
        // A gap of more than two ems between glyphs starts a new cell.
        let wide = last_r.is_some_and(|r| c.l - r > 2.0 * c.size.max(1.0));
        if wide || cells.is_empty() {
            cells.push((c.l, String::new()));
        }
        if let Some((_, s)) = cells.last_mut() {
            if let Some(r) = last_r {
                if !wide && c.l - r > 0.15 * c.size {
                    s.push(' ');
                }
            }
            s.push(c.c);
        }
        last_r = Some(c.r);
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(Line {
        text,
        size,
        bold: placed.iter().all(|c| c.bold),
        l: placed.iter().map(|c| c.l).fold(f32::MAX, f32::min),
        b: placed.iter().map(|c| c.b).fold(f32::MAX, f32::min),
        r: placed.iter().map(|c| c.r).fold(f32::MIN, f32::max),
        t: placed.iter().map(|c| c.t).fold(f32::MIN, f32::max),
        chars: placed.len(),
        hyphen,
        cells,
    })
}

/// PDFium's soft-hyphen markers.
fn is_marker(c: char) -> bool {
    matches!(c, '\u{2}' | '\u{fffe}' | '\u{ad}')
}

const BULLETS: &[char] = &[
    '•', '◦', '▪', '●', '○', '■', '□', '‣', '⁃', '∙', '–', '-', '*',
];

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// A heading at this level; `true` when the whole title is on the line.
    Heading(u8),
    Item,
    Body,
}

/// The blocks of a page (0-based `page`), updating the document's body-size estimate.
pub fn blocks(chars: &[Char], page: u32, outline: &Outline, body: &mut BodySize) -> Vec<Block> {
    let lines = lines(chars);
    for l in &lines {
        body.add(l.size, l.chars);
    }
    let body_size = body.get();
    let roles: Vec<Role> = classify(&lines, page, outline, body_size);
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(end) = table_at(&lines, &roles, i) {
            out.push(table(&lines[i..end]));
            i = end;
            continue;
        }
        let start = i;
        let role = roles[i];
        i += 1;
        while i < lines.len() && continues(&lines, &roles, start, i) {
            if table_at(&lines, &roles, i).is_some() {
                break;
            }
            i += 1;
        }
        let text = join(&lines[start..i]);
        out.push(match role {
            Role::Heading(level) => Block::Heading { level, text },
            Role::Item => Block::ListItem {
                ordered: false,
                depth: 0,
                text: text.trim_start_matches(BULLETS).trim_start().to_string(),
            },
            Role::Body => Block::Paragraph { text },
        });
    }
    out
}

fn classify(lines: &[Line], page: u32, outline: &Outline, body: f32) -> Vec<Role> {
    let mut roles = Vec::with_capacity(lines.len());
    let mut open_title = false;
    for (k, l) in lines.iter().enumerate() {
        if let Some((level, whole)) = outline.level_of(page, &l.text) {
            roles.push(Role::Heading(level.clamp(1, 6)));
            open_title = !whole;
            continue;
        }
        if open_title {
            // The rest of a title the outline matched by its start.
            if let Some(Role::Heading(level)) = roles.last().copied() {
                if (l.size - lines[k - 1].size).abs() < 0.5 {
                    roles.push(Role::Heading(level));
                    continue;
                }
            }
            open_title = false;
        }
        let short = l.chars <= 120 && !l.text.ends_with(['.', ',', ';', '。', '，', '；']);
        let ratio = l.size / body.max(1.0);
        // With an outline the titles come from it; size then finds only headings below its
        // deepest level (unnumbered ones the outline leaves out) or when there is none.
        let level = if ratio >= 2.0 {
            1
        } else if ratio >= 1.5 {
            2
        } else if ratio >= 1.2 {
            3
        } else if ratio >= 1.1 && l.bold {
            4
        } else {
            0
        };
        let has_letters = l.text.chars().filter(|c| c.is_alphabetic()).count() >= 2;
        if level > 0 && short && has_letters {
            let level = if outline.is_empty() {
                level
            } else {
                (outline.depth + 1).max(level).min(6)
            };
            roles.push(Role::Heading(level));
        } else if l.text.starts_with(BULLETS)
            && l.text.chars().nth(1).is_some_and(char::is_whitespace)
            && l.text.chars().count() > 2
        {
            roles.push(Role::Item);
        } else {
            roles.push(Role::Body);
        }
    }
    roles
}

/// Whether line `i` continues the block that starts at line `start`.
fn continues(lines: &[Line], roles: &[Role], start: usize, i: usize) -> bool {
    let (prev, cur) = (&lines[i - 1], &lines[i]);
    let size = prev.size.max(cur.size).max(1.0);
    let gap = prev.b - cur.t;
    // Next line below, close, in the same font size.
    let close = gap > -0.5 * size && gap < 0.6 * size && (prev.size - cur.size).abs() < 0.15 * size;
    if !close {
        return false;
    }
    match (roles[start], roles[i]) {
        (Role::Heading(a), Role::Heading(b)) => a == b && i - start < 3,
        (Role::Heading(_), _) | (_, Role::Heading(_)) => false,
        (_, Role::Item) => false,
        (Role::Item, Role::Body) => cur.l > lines[start].l + 0.5 * size,
        (Role::Body, Role::Body) => {
            // A first-line indent or a short previous line ends the paragraph.
            let block_right = lines[start..i].iter().map(|l| l.r).fold(f32::MIN, f32::max);
            let indent = cur.l > prev.l + 0.8 * size;
            let short_prev = i - start >= 1 && prev.r < block_right - 4.0 * size;
            !indent && !short_prev
        }
    }
}

/// A table starting at line `i`: at least three consecutive body lines, close together, with
/// the same number (≥ 2) of cells starting at the same places.
fn table_at(lines: &[Line], roles: &[Role], i: usize) -> Option<usize> {
    let first = &lines[i];
    let n = first.cells.len();
    if n < 2 || roles[i] != Role::Body {
        return None;
    }
    let mut end = i + 1;
    while end < lines.len() {
        let l = &lines[end];
        let prev = &lines[end - 1];
        let size = l.size.max(1.0);
        let aligned = l.cells.len() == n
            && l.cells
                .iter()
                .zip(&first.cells)
                .all(|(a, b)| (a.0 - b.0).abs() < 1.5 * size);
        let near = prev.b - l.t < 2.0 * size && prev.b - l.t > -0.5 * size;
        if !(aligned && near && roles[end] == Role::Body) {
            break;
        }
        end += 1;
    }
    // Prose in two columns would also align: cells must be short.
    let short = lines[i..end]
        .iter()
        .all(|l| l.cells.iter().all(|c| c.1.chars().count() <= 60));
    (end - i >= 3 && short).then_some(end)
}

fn table(lines: &[Line]) -> Block {
    let mut rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.cells.iter().map(|c| c.1.trim().to_string()).collect())
        .collect();
    let header = rows.remove(0);
    Block::Table { header, rows }
}

/// Lines of one block as text: CJK lines join directly, a soft hyphen joins without a space,
/// others with a space.
fn join(lines: &[Line]) -> String {
    let mut out = String::new();
    for (k, l) in lines.iter().enumerate() {
        if k > 0 {
            let prev = &lines[k - 1];
            let a = out.chars().last();
            let b = l.text.chars().next();
            let cjk = a.is_some_and(is_cjk) && b.is_some_and(is_cjk);
            if !(prev.hyphen || cjk) {
                out.push(' ');
            }
        }
        out.push_str(&l.text);
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff | 0xff00..=0xffef)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of text at `y` (top), size `s`, starting at `x`, 0.5 em per glyph.
    fn line_chars(out: &mut Vec<Char>, text: &str, x: f32, y: f32, s: f32) {
        let mut at = x;
        for c in text.chars() {
            out.push(Char {
                c,
                size: s,
                bold: false,
                l: at,
                r: at + 0.5 * s,
                b: y - s,
                t: y,
                generated: false,
            });
            at += 0.5 * s;
        }
        out.push(Char {
            c: '\n',
            size: s,
            bold: false,
            l: 0.0,
            r: 0.0,
            b: 0.0,
            t: 0.0,
            generated: true,
        });
    }

    #[test]
    fn headings_paragraphs_items_and_tables() {
        let mut c = Vec::new();
        line_chars(&mut c, "Introduction", 50.0, 800.0, 20.0);
        line_chars(&mut c, "This is body text that goes on", 50.0, 770.0, 10.0);
        line_chars(&mut c, "and continues here.", 50.0, 759.0, 10.0);
        line_chars(&mut c, "• first point", 50.0, 740.0, 10.0);
        line_chars(&mut c, "Name      Value", 50.0, 720.0, 10.0);
        line_chars(&mut c, "alpha     1", 50.0, 709.0, 10.0);
        line_chars(&mut c, "beta      2", 50.0, 698.0, 10.0);
        let mut body = BodySize::default();
        let b = blocks(&c, 0, &Outline::default(), &mut body);
        assert_eq!(
            b,
            vec![
                Block::Heading {
                    level: 1,
                    text: "Introduction".into()
                },
                Block::Paragraph {
                    text: "This is body text that goes on and continues here.".into()
                },
                Block::ListItem {
                    ordered: false,
                    depth: 0,
                    text: "first point".into()
                },
                Block::Table {
                    header: vec!["Name".into(), "Value".into()],
                    rows: vec![
                        vec!["alpha".into(), "1".into()],
                        vec!["beta".into(), "2".into()]
                    ]
                }
            ]
        );
    }

    #[test]
    fn outline_titles_are_headings_at_their_level() {
        let mut c = Vec::new();
        line_chars(&mut c, "1.2 Getting started", 50.0, 800.0, 10.0);
        line_chars(&mut c, "Body text of the section.", 50.0, 788.0, 10.0);
        let mut outline = Outline::default();
        outline.add(4, 2, "Getting started");
        let b = blocks(&c, 4, &outline, &mut BodySize::default());
        assert_eq!(
            b[0],
            Block::Heading {
                level: 2,
                text: "1.2 Getting started".into()
            }
        );
        assert!(matches!(b[1], Block::Paragraph { .. }));
    }
}
