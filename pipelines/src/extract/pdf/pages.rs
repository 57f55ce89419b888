//! One document, page by page, through PDFium's C API (the bindings of pdfium-render).
//!
//! The C API is used directly rather than pdfium-render's page objects for two reasons found by
//! measurement on the corpus: `FPDFText_GetText` over the page's whole character range returns
//! every character in one call (pdfium-render's `all()` asks for the characters inside the page
//! box, which loses text drawn outside it on rotated pages and costs a hit test per
//! character), and form fields need PDFium's form environment plus `FPDFPage_Flatten`
//! (`FLAT_NORMALDISPLAY`), which draws the fields' appearances, list-box options and values
//! included, into the page so the text layer has them, as `pdftotext` shows them. Text placed
//! wholly off the page (invisible; `pdftotext` drops it too) is left out, checked per run of
//! text, and per character only on the rare page that has such text.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::os::raw::{c_int, c_ulong, c_void};

use pdfium_render::prelude::{
    PdfiumLibraryBindings, FPDF_BOOKMARK, FPDF_DOCUMENT, FPDF_FORMFILLINFO, FPDF_FORMHANDLE,
    FPDF_PAGE, FPDF_PAGEOBJ_IMAGE, FPDF_TEXTPAGE, FS_RECTF,
};

use super::layout::{self, BodySize, Char, Outline};
use crate::document::Block;
use crate::error::ExtractProblem;

// Values from PDFium's public headers (fpdfview.h, fpdf_flatten.h, fpdf_annot.h, fpdf_formfill.h).
const FPDF_ERR_FILE: u64 = 2;
const FPDF_ERR_FORMAT: u64 = 3;
const FPDF_ERR_PASSWORD: u64 = 4;
const FPDF_ERR_SECURITY: u64 = 6;
const FLAT_NORMALDISPLAY: c_int = 0;
const FLATTEN_SUCCESS: c_int = 1;
const FPDF_ANNOT_LINK: c_int = 2;
const FPDF_ANNOT_POPUP: c_int = 16;
const FORMTYPE_NONE: c_int = 0;

/// At most this many non-space characters of text, over images covering at least
/// [`SCAN_COVER`] of the page, make a page a [`PageOutcome::ScanWithText`]. A page of prose has
/// thousands; a Bates number, date stamp or fax header has a few dozen.
const SCAN_TEXT_CHARS: usize = 100;
/// Share of the page's area that images must cover for a scan.
const SCAN_COVER: f64 = 0.5;

/// What one page gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    /// Its text (line breaks `\n`) and its blocks (see [`layout`]).
    Text(String, Vec<Block>),
    /// A little text over a page mostly covered by images: a scan that carries a page number,
    /// a stamp or a fax header as text. OCR, when asked for, reads the rest.
    ScanWithText(String, Vec<Block>),
    /// No text, but images: a scan.
    ImageOnly,
    /// Nothing at all (a blank page).
    Blank,
    /// PDFium could not load the page or its text.
    Unreadable,
}

/// An open document. Borrows the bytes: PDFium reads them in place.
pub struct Document<'a> {
    pdfium: &'a dyn PdfiumLibraryBindings,
    doc: FPDF_DOCUMENT,
    form: FPDF_FORMHANDLE,
    // PDFium keeps a pointer to this until the form environment is closed.
    _form_info: Option<Box<FPDF_FORMFILLINFO>>,
    pages: u32,
    /// The outline's titles by page: headings with their levels.
    outline: Outline,
    /// The body font size seen so far: headings are set larger.
    body: RefCell<BodySize>,
    _bytes: PhantomData<&'a [u8]>,
}

fn corrupt(detail: impl Into<String>) -> ExtractProblem {
    ExtractProblem::Corrupt {
        format: "PDF",
        detail: detail.into(),
    }
}

impl<'a> Document<'a> {
    /// Opens `bytes`; the error says why not (password, security handler, no structure).
    pub fn open(
        pdfium: &'a dyn PdfiumLibraryBindings,
        bytes: &'a [u8],
        password: Option<&str>,
    ) -> Result<Self, ExtractProblem> {
        // SAFETY: PDFium reads `bytes` until FPDF_CloseDocument (in Drop); the lifetime 'a keeps
        // them alive that long.
        let doc = unsafe { pdfium.FPDF_LoadMemDocument64(bytes, password) };
        if doc.is_null() {
            // SAFETY: a plain query of PDFium's last error.
            let code = u64::from(unsafe { pdfium.FPDF_GetLastError() } as u32);
            return Err(match code {
                FPDF_ERR_PASSWORD if password.is_some() => ExtractProblem::WrongPassword("PDF"),
                FPDF_ERR_PASSWORD => ExtractProblem::PasswordNeeded("PDF"),
                FPDF_ERR_SECURITY => ExtractProblem::Unsupported(
                    "PDF encrypted with a security handler PDFium does not support".into(),
                ),
                FPDF_ERR_FORMAT | FPDF_ERR_FILE => corrupt(
                    "no document structure could be found, even after rebuilding the cross-reference table",
                ),
                other => corrupt(format!("PDFium could not open it (error {other})")),
            });
        }
        // SAFETY: `doc` is a live document handle.
        let count = unsafe { pdfium.FPDF_GetPageCount(doc) };
        let mut out = Document {
            pdfium,
            doc,
            form: std::ptr::null_mut(),
            _form_info: None,
            pages: u32::try_from(count).unwrap_or(0),
            outline: Outline::default(),
            body: RefCell::new(BodySize::default()),
            _bytes: PhantomData,
        };
        out.outline = out.read_outline();
        // SAFETY: `doc` is live.
        if unsafe { pdfium.FPDF_GetFormType(doc) } != FORMTYPE_NONE {
            // SAFETY: FPDF_FORMFILLINFO is a C struct of integers, raw pointers and optional
            // function pointers, for all of which zero is valid (no callbacks).
            let mut info: Box<FPDF_FORMFILLINFO> = Box::new(unsafe { std::mem::zeroed() });
            info.version = 1;
            // SAFETY: `info` is boxed and kept in `out` until the environment is closed.
            out.form = unsafe { pdfium.FPDFDOC_InitFormFillEnvironment(doc, &mut *info) };
            out._form_info = Some(info);
        }
        Ok(out)
    }

    /// Page count.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The text of page `index` (0-based).
    pub fn page(&self, index: u32) -> PageOutcome {
        let Ok(i) = c_int::try_from(index) else {
            return PageOutcome::Unreadable;
        };
        let Some(mut page) = self.load(i) else {
            return PageOutcome::Unreadable;
        };
        if !self.form.is_null() && self.has_drawn_annotations(page) {
            // SAFETY: `page` is live; flattening rewrites its content in the document, so it
            // is reloaded to be seen (PDFium's FPDFPage_Flatten contract).
            let flattened = unsafe { self.pdfium.FPDFPage_Flatten(page, FLAT_NORMALDISPLAY) };
            if flattened == FLATTEN_SUCCESS {
                self.close(page);
                match self.load(i) {
                    Some(p) => page = p,
                    None => return PageOutcome::Unreadable,
                }
            }
        }
        let outcome = match self.text(page, index) {
            None => PageOutcome::Unreadable,
            Some((t, _)) if t.trim().is_empty() => {
                if self.has_images(page) {
                    PageOutcome::ImageOnly
                } else {
                    PageOutcome::Blank
                }
            }
            Some((t, b))
                if t.chars().filter(|c| !c.is_whitespace()).count() <= SCAN_TEXT_CHARS
                    && self.image_cover(page) >= SCAN_COVER =>
            {
                PageOutcome::ScanWithText(t, b)
            }
            Some((t, b)) => PageOutcome::Text(t, b),
        };
        self.close(page);
        outcome
    }

    fn load(&self, index: c_int) -> Option<FPDF_PAGE> {
        // SAFETY: `doc` is live; a bad index gives null.
        let page = unsafe { self.pdfium.FPDF_LoadPage(self.doc, index) };
        if page.is_null() {
            return None;
        }
        if !self.form.is_null() {
            // SAFETY: `page` and `form` are live.
            unsafe { self.pdfium.FORM_OnAfterLoadPage(page, self.form) };
        }
        Some(page)
    }

    fn close(&self, page: FPDF_PAGE) {
        // SAFETY: `page` came from `load` and is closed once.
        unsafe {
            if !self.form.is_null() {
                self.pdfium.FORM_OnBeforeClosePage(page, self.form);
            }
            self.pdfium.FPDF_ClosePage(page);
        }
    }

    /// Annotations whose appearance carries text (form fields, free text, stamps): anything
    /// but links and popups.
    fn has_drawn_annotations(&self, page: FPDF_PAGE) -> bool {
        // SAFETY: `page` is live; each annotation handle is closed after use.
        unsafe {
            let n = self.pdfium.FPDFPage_GetAnnotCount(page);
            (0..n).any(|i| {
                let annot = self.pdfium.FPDFPage_GetAnnot(page, i);
                if annot.is_null() {
                    return false;
                }
                let kind = self.pdfium.FPDFAnnot_GetSubtype(annot) as c_int;
                self.pdfium.FPDFPage_CloseAnnot(annot);
                kind != FPDF_ANNOT_LINK && kind != FPDF_ANNOT_POPUP
            })
        }
    }

    /// The page's text and blocks.
    fn text(&self, page: FPDF_PAGE, index: u32) -> Option<(String, Vec<Block>)> {
        // SAFETY: `page` is live; the text page is closed before returning; the buffer holds
        // `count` UTF-16 units plus the terminating NUL PDFium writes.
        unsafe {
            let tp = self.pdfium.FPDFText_LoadPage(page);
            if tp.is_null() {
                return None;
            }
            let count = self.pdfium.FPDFText_CountChars(tp);
            let mut text = String::new();
            let mut blocks = Vec::new();
            if count > 0 {
                let bounds = self.media_box(page);
                let inside = self.all_inside(tp, count, bounds);
                text = if inside {
                    let mut buf = vec![0u16; usize::try_from(count).unwrap_or(0) + 1];
                    let written = self.pdfium.FPDFText_GetText(tp, 0, count, buf.as_mut_ptr());
                    let len = usize::try_from(written).unwrap_or(0).saturating_sub(1);
                    clean(&String::from_utf16_lossy(&buf[..len.min(buf.len())]))
                } else {
                    clean(&self.chars_inside(tp, count, bounds))
                };
                if !text.trim().is_empty() {
                    let chars = self.chars(tp, count, (!inside).then_some(bounds).flatten());
                    let mut body = self.body.borrow_mut();
                    blocks = layout::blocks(&chars, index, &self.outline, &mut body);
                }
            }
            self.pdfium.FPDFText_ClosePage(tp);
            Some((text, blocks))
        }
    }

    /// Every character with its loose box, font size and weight; only those touching
    /// `bounds` when given.
    fn chars(&self, tp: FPDF_TEXTPAGE, count: c_int, bounds: Option<[f64; 4]>) -> Vec<Char> {
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        // SAFETY: `tp` is live and every index is below its character count; PDFium writes
        // the rectangle.
        unsafe {
            for i in 0..count {
                let Some(c) = char::from_u32(self.pdfium.FPDFText_GetUnicode(tp, i)) else {
                    continue;
                };
                let generated = self.pdfium.FPDFText_IsGenerated(tp, i) == 1;
                let mut rect = FS_RECTF {
                    left: 0.0,
                    top: 0.0,
                    right: 0.0,
                    bottom: 0.0,
                };
                if !generated && self.pdfium.FPDFText_GetLooseCharBox(tp, i, &mut rect) == 0 {
                    rect = FS_RECTF {
                        left: 0.0,
                        top: 0.0,
                        right: 0.0,
                        bottom: 0.0,
                    };
                }
                let (l, r) = (rect.left.min(rect.right), rect.left.max(rect.right));
                let (b, t) = (rect.bottom.min(rect.top), rect.bottom.max(rect.top));
                if let Some(bounds) = bounds {
                    let placed = [f64::from(l), f64::from(b), f64::from(r), f64::from(t)];
                    if !generated && r > l && !touches(bounds, placed) {
                        continue;
                    }
                }
                out.push(Char {
                    c,
                    size: self.pdfium.FPDFText_GetFontSize(tp, i) as f32,
                    bold: self.pdfium.FPDFText_GetFontWeight(tp, i) >= 600,
                    l,
                    b,
                    r,
                    t,
                    generated,
                });
            }
        }
        out
    }

    /// The outline (bookmarks) as titles by page, at most 10 000 entries and 16 levels deep
    /// (an outline can loop).
    fn read_outline(&self) -> Outline {
        let mut outline = Outline::default();
        let mut seen = 0usize;
        // SAFETY: `doc` is live; bookmark handles are owned by it.
        let first = unsafe {
            self.pdfium
                .FPDFBookmark_GetFirstChild(self.doc, std::ptr::null_mut())
        };
        let mut stack: Vec<(FPDF_BOOKMARK, u8)> = vec![(first, 1)];
        while let Some((mut bm, level)) = stack.pop() {
            while !bm.is_null() && seen < 10_000 {
                seen += 1;
                // SAFETY: `bm` is a live bookmark of `doc`.
                unsafe {
                    let title = self.bookmark_title(bm);
                    let mut dest = self.pdfium.FPDFBookmark_GetDest(self.doc, bm);
                    if dest.is_null() {
                        let action = self.pdfium.FPDFBookmark_GetAction(bm);
                        if !action.is_null() {
                            dest = self.pdfium.FPDFAction_GetDest(self.doc, action);
                        }
                    }
                    if !dest.is_null() {
                        let page = self.pdfium.FPDFDest_GetDestPageIndex(self.doc, dest);
                        if let Ok(page) = u32::try_from(page) {
                            outline.add(page, level, &title);
                        }
                    }
                    let child = self.pdfium.FPDFBookmark_GetFirstChild(self.doc, bm);
                    if !child.is_null() && level < 16 {
                        stack.push((child, level + 1));
                    }
                    bm = self.pdfium.FPDFBookmark_GetNextSibling(self.doc, bm);
                }
            }
        }
        outline
    }

    /// A bookmark's title (UTF-16LE from PDFium).
    unsafe fn bookmark_title(&self, bm: FPDF_BOOKMARK) -> String {
        let needed = self
            .pdfium
            .FPDFBookmark_GetTitle(bm, std::ptr::null_mut(), 0);
        let units = usize::try_from(needed).unwrap_or(0) / 2;
        if units == 0 || units > 4096 {
            return String::new();
        }
        let mut buf = vec![0u16; units];
        let written = self.pdfium.FPDFBookmark_GetTitle(
            bm,
            buf.as_mut_ptr().cast::<c_void>(),
            (units * 2) as c_ulong,
        );
        let len = (usize::try_from(written).unwrap_or(0) / 2).min(units);
        String::from_utf16_lossy(&buf[..len])
            .trim_end_matches('\0')
            .to_string()
    }

    /// The page's media box (left, bottom, right, top) in the unrotated space of its text,
    /// widened by a point; `None` when the page has none (then nothing is filtered).
    fn media_box(&self, page: FPDF_PAGE) -> Option<[f64; 4]> {
        let (mut l, mut b, mut r, mut t) = (0f32, 0f32, 0f32, 0f32);
        // SAFETY: `page` is live; PDFium writes the four floats.
        let ok = unsafe {
            self.pdfium
                .FPDFPage_GetMediaBox(page, &mut l, &mut b, &mut r, &mut t)
        };
        (ok != 0).then(|| {
            [
                f64::from(l.min(r)) - 1.0,
                f64::from(b.min(t)) - 1.0,
                f64::from(l.max(r)) + 1.0,
                f64::from(b.max(t)) + 1.0,
            ]
        })
    }

    /// Whether every run of text on the page touches the page (the common case: one cheap
    /// pass over PDFium's text rectangles). Text placed wholly off the page is not shown, and
    /// `pdftotext` leaves it out too.
    fn all_inside(&self, tp: FPDF_TEXTPAGE, count: c_int, bounds: Option<[f64; 4]>) -> bool {
        let Some(bounds) = bounds else {
            return true;
        };
        // SAFETY: `tp` is live; the rectangles are read by index below their count.
        unsafe {
            let rects = self.pdfium.FPDFText_CountRects(tp, 0, count);
            (0..rects).all(|i| {
                let (mut l, mut t, mut r, mut b) = (0f64, 0f64, 0f64, 0f64);
                self.pdfium
                    .FPDFText_GetRect(tp, i, &mut l, &mut t, &mut r, &mut b)
                    == 0
                    || touches(bounds, [l, b.min(t), r, b.max(t)])
            })
        }
    }

    /// The page's characters that touch the page, with PDFium's generated spaces and breaks.
    fn chars_inside(&self, tp: FPDF_TEXTPAGE, count: c_int, bounds: Option<[f64; 4]>) -> String {
        let bounds = bounds.unwrap_or([f64::MIN, f64::MIN, f64::MAX, f64::MAX]);
        let mut out = String::new();
        // SAFETY: `tp` is live and every index is below its character count.
        unsafe {
            for i in 0..count {
                let keep = self.pdfium.FPDFText_IsGenerated(tp, i) == 1 || {
                    let (mut l, mut r, mut b, mut t) = (0f64, 0f64, 0f64, 0f64);
                    self.pdfium
                        .FPDFText_GetCharBox(tp, i, &mut l, &mut r, &mut b, &mut t)
                        == 0
                        || touches(bounds, [l, b.min(t), r, b.max(t)])
                };
                if keep {
                    if let Some(c) = char::from_u32(self.pdfium.FPDFText_GetUnicode(tp, i)) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// Share of the page's media box covered by top-level images (overlaps counted twice,
    /// capped at 1).
    fn image_cover(&self, page: FPDF_PAGE) -> f64 {
        let Some([pl, pb, pr, pt]) = self.media_box(page) else {
            return 0.0;
        };
        let page_area = (pr - pl) * (pt - pb);
        if page_area <= 0.0 {
            return 0.0;
        }
        let mut covered = 0.0;
        // SAFETY: `page` is live; object handles are owned by it; PDFium writes the floats.
        unsafe {
            for i in 0..self.pdfium.FPDFPage_CountObjects(page) {
                let o = self.pdfium.FPDFPage_GetObject(page, i);
                if o.is_null() || self.pdfium.FPDFPageObj_GetType(o) != FPDF_PAGEOBJ_IMAGE as c_int
                {
                    continue;
                }
                let (mut l, mut b, mut r, mut t) = (0f32, 0f32, 0f32, 0f32);
                if self
                    .pdfium
                    .FPDFPageObj_GetBounds(o, &mut l, &mut b, &mut r, &mut t)
                    == 0
                {
                    continue;
                }
                let w = f64::from(r).min(pr) - f64::from(l).max(pl);
                let h = f64::from(t).min(pt) - f64::from(b).max(pb);
                if w > 0.0 && h > 0.0 {
                    covered += w * h;
                }
            }
        }
        (covered / page_area).min(1.0)
    }

    fn has_images(&self, page: FPDF_PAGE) -> bool {
        // SAFETY: `page` is live; object handles are owned by it.
        unsafe {
            let n = self.pdfium.FPDFPage_CountObjects(page);
            (0..n).any(|i| {
                let o = self.pdfium.FPDFPage_GetObject(page, i);
                !o.is_null() && self.pdfium.FPDFPageObj_GetType(o) == FPDF_PAGEOBJ_IMAGE as c_int
            })
        }
    }
}

impl Drop for Document<'_> {
    fn drop(&mut self) {
        // SAFETY: the handles are live and closed once, the form environment first.
        unsafe {
            if !self.form.is_null() {
                self.pdfium.FPDFDOC_ExitFormFillEnvironment(self.form);
            }
            self.pdfium.FPDF_CloseDocument(self.doc);
        }
    }
}

/// Whether box `b` overlaps box `a` (both left, bottom, right, top).
fn touches(a: [f64; 4], b: [f64; 4]) -> bool {
    b[0] <= a[2] && b[2] >= a[0] && b[1] <= a[3] && b[3] >= a[1]
}

/// PDFium's text with `\r\n` line ends and its markers (soft hyphen as U+0002, U+FFFE) made
/// plain: `\n` lines, soft hyphens removed.
fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\r' => {}
            '\u{2}' | '\u{fffe}' | '\u{ad}' => {}
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn pdfium_markers_become_plain_text() {
        assert_eq!(clean("Hel\u{2}lo\r\nWorld\u{c}"), "Hello\nWorld ");
    }
}
