//! Cheap structural checks that tell a damaged PDF from a sound one.
//!
//! PDFium silently rebuilds a broken cross-reference table by scanning the file, which is what
//! we want (the text is usually all there), but the job's result should say the file was
//! damaged. These checks look only at the trailer and the last cross-reference section, so they
//! cost microseconds even on a 100 MB file.

/// Warnings about the file's structure; empty for a sound file.
pub fn check(bytes: &[u8]) -> Vec<String> {
    let mut warnings = Vec::new();
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    if find(tail, b"%%EOF").is_none() {
        warnings.push(
            "the PDF looks truncated (no %%EOF marker at the end); text was recovered from what is there"
                .to_string(),
        );
    }
    if let Some(problem) = xref_problem(bytes) {
        warnings.push(format!(
            "the PDF's cross-reference table is damaged ({problem}); it was rebuilt by scanning the file"
        ));
    }
    warnings
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\r' | b'\n' | b'\t' | b'\x0c' | 0) {
        at += 1;
    }
    at
}

fn number(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let end = bytes[at..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |n| at + n);
    if end == at || end - at > 12 {
        return None;
    }
    let n = std::str::from_utf8(&bytes[at..end]).ok()?.parse().ok()?;
    Some((n, end))
}

/// Describes what is wrong with the last cross-reference section, if anything.
fn xref_problem(bytes: &[u8]) -> Option<String> {
    let tail_start = bytes.len().saturating_sub(4096);
    let Some(pos) = rfind(&bytes[tail_start..], b"startxref") else {
        return Some("no startxref".into());
    };
    let at = skip_ws(bytes, tail_start + pos + b"startxref".len());
    let Some((offset, _)) = number(bytes, at) else {
        return Some("startxref has no offset".into());
    };
    let Ok(offset) = usize::try_from(offset) else {
        return Some("startxref points past the end of the file".into());
    };
    if offset >= bytes.len() {
        return Some("startxref points past the end of the file".into());
    }
    let at = skip_ws(bytes, offset);
    if bytes[at..].starts_with(b"xref") {
        return table_problem(bytes, at + 4);
    }
    // A cross-reference stream starts with an object header "N G obj".
    match object_header(bytes, at) {
        true => None,
        false => Some(format!(
            "startxref offset {offset} points at neither a table nor a stream"
        )),
    }
}

fn object_header(bytes: &[u8], at: usize) -> bool {
    let Some((_, end)) = number(bytes, at) else {
        return false;
    };
    let at = skip_ws(bytes, end);
    let Some((_, end)) = number(bytes, at) else {
        return false;
    };
    bytes[skip_ws(bytes, end)..].starts_with(b"obj")
}

/// Checks every in-use entry of a classic table points at the object it names.
fn table_problem(bytes: &[u8], mut at: usize) -> Option<String> {
    let mut checked = 0usize;
    loop {
        at = skip_ws(bytes, at);
        if bytes[at..].starts_with(b"trailer") {
            return None;
        }
        let (first, end) = number(bytes, at)?;
        let (count, end) = number(bytes, skip_ws(bytes, end))?;
        at = end;
        for i in 0..count {
            at = skip_ws(bytes, at);
            let (offset, end) = number(bytes, at)?;
            let (_generation, end) = number(bytes, skip_ws(bytes, end))?;
            let kind_at = skip_ws(bytes, end);
            let kind = *bytes.get(kind_at)?;
            at = kind_at + 1;
            if kind != b'n' || offset == 0 {
                continue;
            }
            checked += 1;
            if checked > 200_000 {
                return None;
            }
            let ok = usize::try_from(offset).ok().is_some_and(|o| {
                o < bytes.len()
                    && number(bytes, o).is_some_and(|(n, _)| n == first + i)
                    && object_header(bytes, o)
            });
            if !ok {
                return Some(format!(
                    "entry for object {} points at offset {offset}, where that object is not",
                    first + i
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf(xref_offset_delta: i64) -> Vec<u8> {
        let body = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
        let obj_at = 9i64 + xref_offset_delta;
        let xref_at = body.len();
        let mut out = body;
        out.extend_from_slice(
            format!(
                "xref\n0 2\n0000000000 65535 f \n{obj_at:010} 00000 n \ntrailer\n<< /Root 1 0 R /Size 2 >>\nstartxref\n{xref_at}\n%%EOF\n"
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn sound_table_has_no_warning() {
        assert!(check(&pdf(0)).is_empty(), "{:?}", check(&pdf(0)));
    }

    #[test]
    fn shifted_offsets_are_reported() {
        let w = check(&pdf(3));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("entry for object 1"), "{w:?}");
    }

    #[test]
    fn truncation_is_reported() {
        let mut bytes = pdf(0);
        bytes.truncate(bytes.len() - 30);
        let w = check(&bytes);
        assert!(w.iter().any(|w| w.contains("truncated")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("no startxref")), "{w:?}");
    }
}
