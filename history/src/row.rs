//! One row of `mindora_job_attempts`, as the writer inserts it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// One execution attempt (columns of `mindora_job_attempts`; see the migration for their
/// meaning). Text bounds (error message, args summary) are the producer's to apply; the
/// writer cuts anything longer again before inserting.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub job_id: String,
    /// `redis` | `amqp` | `memory`.
    pub source: &'static str,
    pub queue: String,
    pub function: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `finished` | `retried` | `failed` | `stopped` | `given_back` | `dropped`.
    pub status: &'static str,
    pub worker: String,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub wait_ms: Option<i64>,
    pub run_ms: i64,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub args_summary: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
}

/// Longest error message stored (characters), as the schema documents.
pub const ERROR_MESSAGE_MAX: usize = 2048;
/// Longest args summary stored (characters).
pub const ARGS_SUMMARY_MAX: usize = 512;

/// `s` cut to at most `max` characters, without NUL (PostgreSQL text cannot hold it and
/// would refuse the whole batch).
pub(crate) fn text(s: &str, max: usize) -> Cow<'_, str> {
    let cut = match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    };
    if cut.contains('\0') {
        Cow::Owned(cut.replace('\0', ""))
    } else {
        Cow::Borrowed(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_bounded_and_nul_free() {
        assert_eq!(text("héllo", 2), "hé");
        assert_eq!(text("a\0b", 10), "ab");
        assert_eq!(text("abc", 10), "abc");
        assert!(matches!(text("abc", 10), Cow::Borrowed(_)));
    }
}
