//! HTML to text: a small tolerant scanner (no DOM) that keeps the visible text, turns block
//! elements into line breaks and drops scripts, styles and comments.

const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "hr",
    "dd",
    "dt",
    "title",
    "main",
    "nav",
    "aside",
    "figure",
    "figcaption",
    "form",
];
const SKIP: &[&str] = &["script", "style", "noscript", "template", "svg"];

/// Visible text of an HTML page (the `<title>` included, as the first line).
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut title = String::new();
    let mut in_title = false;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if in_title {
            title.push_str(text);
        } else {
            push_text(&mut out, text);
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name == "title" {
            in_title = !closing;
            continue;
        }
        if !closing && SKIP.contains(&name.as_str()) {
            let end = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = lower
                .find(&end)
                .and_then(|i| rest[i..].find('>').map(|j| &rest[i + j + 1..]))
                .unwrap_or("");
            continue;
        }
        if name == "td" || name == "th" {
            if closing {
                out.push('\t');
            }
        } else if BLOCK.contains(&name.as_str()) {
            out.push('\n');
            if matches!(
                name.as_str(),
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table"
            ) {
                out.push('\n');
            }
        }
    }
    push_text(&mut out, rest);
    let title = decode_entities(title.trim());
    if title.is_empty() {
        out
    } else {
        format!("{title}\n\n{out}")
    }
}

fn push_text(out: &mut String, raw: &str) {
    if raw.is_empty() {
        return;
    }
    let decoded = decode_entities(raw);
    let mut last_space = out.ends_with([' ', '\n', '\t']) || out.is_empty();
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{3000}' && c != '\u{a0}' {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
            last_space = false;
        }
    }
}

/// Decodes the common named entities and all numeric ones.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|e| {
            let ent = &rest[1..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "copy" => Some('©'),
                "reg" => Some('®'),
                "laquo" => Some('«'),
                "raquo" => Some('»'),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
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
        assert!(t.contains("a\tb"));
        assert!(!t.contains("var x"));
        assert!(!t.contains("hidden"));
        assert!(!t.contains("p{}"));
    }
}
