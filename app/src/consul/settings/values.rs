//! Parsing one KV value: text or JSON string, concurrency, queue list, log filter.

use std::collections::BTreeSet;

use super::MAX_CONCURRENCY;

/// A KV value as text: JSON strings are unquoted, everything else is trimmed as is.
pub fn text(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| "not UTF-8".to_string())?
        .trim();
    if s.starts_with('"') {
        return serde_json::from_str::<String>(s).map_err(|e| format!("bad JSON string: {e}"));
    }
    Ok(s.to_string())
}

/// Parses a concurrency value.
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(1..=MAX_CONCURRENCY).contains(&n) {
        return Err(format!("{n} is outside 1..={MAX_CONCURRENCY}"));
    }
    Ok(n)
}

/// Parses a queue list: `a,b,c` or `["a","b","c"]`.
pub fn parse_queues(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = if s.starts_with('[') {
        serde_json::from_str::<Vec<String>>(s).map_err(|e| format!("bad JSON list: {e}"))?
    } else {
        s.split(',').map(|q| q.trim().to_string()).collect()
    };
    if items.is_empty() || items.iter().any(|q| q.is_empty()) {
        return Err("needs at least one queue and no empty names".into());
    }
    let mut seen = BTreeSet::new();
    for q in &items {
        if q.len() > 200 || q.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{q:?} is not a queue name"));
        }
        if !seen.insert(q) {
            return Err(format!("{q:?} is listed twice"));
        }
    }
    Ok(items)
}

pub(super) fn optional_spec(s: &str) -> Option<String> {
    (!s.is_empty() && !s.eq_ignore_ascii_case("off")).then(|| s.to_string())
}

/// Validates a log filter.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty filter".into());
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}
