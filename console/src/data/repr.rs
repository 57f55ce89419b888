//! Python-`repr`-like text of decoded job values (args, kwargs, meta, results), bounded so a
//! huge payload never makes a huge page. Pickle tuples and sets arrive as lists (the SDK
//! decodes to JSON values), so they print with `[ ]`.

use serde_json::{Map, Value};

/// Longest rendering; longer text is cut with a note of how much was left out.
pub const MAX_REPR: usize = 4096;

/// `repr(value)`, bounded.
pub fn repr(v: &Value) -> String {
    bound(render(v))
}

/// `repr(list)` of positional arguments: `(1, 'a')` as Python prints an args tuple.
pub fn repr_args(args: &[Value]) -> String {
    let inner: Vec<String> = args.iter().map(render).collect();
    let comma = if args.len() == 1 { "," } else { "" };
    bound(format!("({}{comma})", inner.join(", ")))
}

/// `repr(dict)`.
pub fn repr_map(m: &Map<String, Value>) -> String {
    bound(render_map(m))
}

fn bound(s: String) -> String {
    if s.len() <= MAX_REPR {
        return s;
    }
    let mut cut = MAX_REPR;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &s[..cut], s.len() - cut)
}

fn render(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(a) => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => render_map(m),
    }
}

fn render_map(m: &Map<String, Value>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}: {}", quote(k), render(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Python's choice of quotes: single, unless the text holds a single quote and no double.
fn quote(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_like_python() {
        assert_eq!(repr_args(&[json!(1)]), "(1,)");
        assert_eq!(repr_args(&[json!(1), json!("a")]), "(1, 'a')");
        assert_eq!(
            repr(&json!({"k": [true, null, "it's"]})),
            "{'k': [True, None, \"it's\"]}"
        );
        assert_eq!(repr(&json!("a\nb")), "'a\\nb'");
        let long = repr(&json!("x".repeat(10_000)));
        assert!(long.len() < MAX_REPR + 40 && long.ends_with("more bytes)"));
    }
}
