//! Failed attempts grouped by error (the Errors page).
//!
//! Masking every message in SQL (`regexp_replace`, about 10 µs a row) made 14,000 failures
//! of a day cost ~200 ms. So PostgreSQL groups by the raw `(error_type, error_message)`
//! only (a plain sort or hash), and the masking and merging of groups happen here, once per
//! distinct message. [`mask`] does what the former SQL expression did (a test compares the
//! two on real PostgreSQL).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row};

use super::history::{push_filter, MAX_ROWS};
use super::{DataError, ErrorGroup, Filter, History};

/// Job ids carried per SQL row (a raw message, numbers aside). Enough for an exact union in the usual case
/// (a message naming an id is rare per job); a larger group makes `jobs` a bound, see
/// [`History::error_groups`].
const JOB_IDS_PER_MESSAGE: i64 = 1_000;

/// Functions shown per group (the first, alphabetically).
const FUNCTIONS_SHOWN: usize = 5;

/// The former SQL mask, for the test that checks [`mask`] against PostgreSQL.
pub const MASK_SQL: &str = "regexp_replace(regexp_replace(coalesce($1::text, ''), \
     '\\m(0x)?[0-9A-Fa-f-]*[0-9][0-9A-Fa-f-]*\\M', '#', 'g'), '[0-9]+', '#', 'g')";

impl History {
    /// Failed attempts matching `filter` (any status with an error when the filter names
    /// none) grouped by error type and masked message ([`mask`]), largest groups first.
    ///
    /// `jobs` (distinct job ids) is exact unless a group merges several SQL rows (raw
    /// messages differing in more than numbers, e.g. hex ids) and one of them has more than
    /// 1,000 distinct jobs; then it is the larger of the union of the ids carried and the
    /// largest per-row count: a lower bound, missing only jobs beyond a row's first 1,000 ids.
    pub async fn error_groups(
        &self,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<ErrorGroup>, DataError> {
        // Digits 2-9 become 1 in the grouping key: `mask` of the key is `mask` of every
        // message it stands for (it sees only digit or not, and a literal "0x"), and
        // messages that differ only in numbers arrive as one row.
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT coalesce(error_type, ''), translate(coalesce(error_message, ''), '23456789', '11111111'), \
             count(*), count(DISTINCT job_id), max(ended_at), \
             (array_agg(DISTINCT function))[1:5], ",
        );
        q.push("(array_agg(DISTINCT job_id))[1:")
            .push(JOB_IDS_PER_MESSAGE.to_string())
            .push("] FROM mindora_job_attempts WHERE error_type IS NOT NULL");
        push_filter(&mut q, filter);
        q.push(" GROUP BY 1, 2");
        let rows = q.build().fetch_all(&self.pool).await?;

        let mut groups: HashMap<(String, String), Merged> = HashMap::new();
        for r in &rows {
            let error_type: String = r.try_get(0)?;
            let message: String = r.try_get(1)?;
            let part = Part {
                count: r.try_get(2)?,
                jobs: r.try_get(3)?,
                last_seen: r.try_get(4)?,
                functions: r.try_get(5)?,
                job_ids: r.try_get(6)?,
            };
            groups
                .entry((error_type, mask(&message)))
                .or_default()
                .add(part);
        }
        let mut out: Vec<ErrorGroup> = groups
            .into_iter()
            .filter_map(|((error_type, message), m)| {
                Some(ErrorGroup {
                    error_type,
                    message,
                    count: m.count,
                    jobs: (m.job_ids.len() as i64).max(m.max_jobs),
                    last_seen: m.last_seen?,
                    functions: m.functions.into_iter().take(FUNCTIONS_SHOWN).collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (b.count, b.last_seen, &a.error_type, &a.message).cmp(&(
                a.count,
                a.last_seen,
                &b.error_type,
                &b.message,
            ))
        });
        out.truncate(limit.clamp(1, MAX_ROWS) as usize);
        Ok(out)
    }
}

/// One SQL row: a distinct raw message.
struct Part {
    count: i64,
    jobs: i64,
    last_seen: DateTime<Utc>,
    functions: Vec<String>,
    job_ids: Vec<String>,
}

/// The raw messages of one masked group, merged.
#[derive(Default)]
struct Merged {
    count: i64,
    last_seen: Option<DateTime<Utc>>,
    functions: BTreeSet<String>,
    job_ids: HashSet<String>,
    /// The largest exact per-message count (bounds `jobs` from below when ids were capped).
    max_jobs: i64,
}

impl Merged {
    fn add(&mut self, p: Part) {
        self.count += p.count;
        self.last_seen = self.last_seen.max(Some(p.last_seen));
        // Each part holds its 5 alphabetically first functions, so the union's first 5 are exact.
        self.functions.extend(p.functions);
        self.job_ids.extend(p.job_ids);
        self.max_jobs = self.max_jobs.max(p.jobs);
    }
}

/// PostgreSQL's word characters (`\m`, `\M`): letters, digits and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_hex_or_dash(c: char) -> bool {
    c.is_ascii_hexdigit() || c == '-'
}

/// Masks what differs between occurrences of one error: a word-bounded token of hex
/// digits and dashes holding a digit, `0x` hex too (ids, uuids, numbers), becomes `#`, as
/// do digits left inside words. The same as the SQL
/// `regexp_replace(regexp_replace(m, '\m(0x)?[0-9A-Fa-f-]*[0-9][0-9A-Fa-f-]*\M', '#', 'g'), '[0-9]+', '#', 'g')`.
pub fn mask(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut first = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let word_start = is_word(chars[i]) && (i == 0 || !is_word(chars[i - 1]));
        if let Some(end) = word_start.then(|| token_end(&chars, i)).flatten() {
            first.push('#');
            i = end;
        } else {
            first.push(chars[i]);
            i += 1;
        }
    }
    // Then every run of digits left.
    let mut out = String::with_capacity(first.len());
    let mut in_digits = false;
    for c in first.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Where the longest id token starting at the word start `start` ends (exclusive), if one
/// does: `(0x)?` then hex digits and dashes holding a digit, ending at a word end.
fn token_end(chars: &[char], start: usize) -> Option<usize> {
    // Without the prefix, a token at "0x…" would end inside the word "0x…": no match.
    let body = if chars.get(start) == Some(&'0') && chars.get(start + 1) == Some(&'x') {
        start + 2
    } else {
        start
    };
    let run_end = body
        + chars[body..]
            .iter()
            .take_while(|c| is_hex_or_dash(**c))
            .count();
    // Longest first: an end must follow a word character and precede a non-word one.
    (body + 1..=run_end).rev().find(|&e| {
        is_word(chars[e - 1])
            && chars.get(e).is_none_or(|c| !is_word(*c))
            && chars[body..e].iter().any(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn ids_and_digits_are_masked() {
        assert_eq!(mask("job 17 failed at 0xdeadbeef12"), "job # failed at #");
        assert_eq!(
            mask("timeout after 30s talking to db-7"),
            "timeout after #s talking to #"
        );
        assert_eq!(
            mask("missing key 9e107d9d372bb6826bd81d3542a419d6"),
            "missing key #"
        );
        assert_eq!(
            mask("uuid 123e4567-e89b-12d3-a456-426614174000."),
            "uuid #."
        );
        assert_eq!(mask("abc-123- x"), "#- x");
        assert_eq!(mask("no digits, café"), "no digits, café");
        assert_eq!(mask(""), "");
    }

    /// The SQL grouping key (digits 2-9 as 1) masks as the message it stands for.
    #[test]
    fn the_grouping_key_masks_alike() {
        for s in ["0x2f 5x9 20x1 x0x3", "job 987 at db-42.", "a9-9b 0-9 7_8"] {
            let key: String = s
                .chars()
                .map(|c| if ('2'..='9').contains(&c) { '1' } else { c })
                .collect();
            assert_eq!(mask(&key), mask(s), "{s:?}");
        }
    }
}
