//! Time formats: rq stores ISO-8601 UTC with microseconds and a `Z` (`utcformat`) in job and
//! worker hashes, integer epoch seconds as registry scores, and float epoch seconds in
//! execution hashes and result streams.

use chrono::{DateTime, NaiveDateTime, Utc};

/// rq's `utcformat`: `2026-11-30T11:01:00.152292Z`.
pub fn utcformat(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses rq's `utcformat` (and the second-precision form older rq wrote).
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    let trimmed = s.strip_suffix('Z').unwrap_or(s);
    NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|n| n.and_utc())
}

/// rq's `current_timestamp()`: whole epoch seconds, used as registry scores.
pub fn epoch_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// Float epoch seconds as Python prints `datetime.timestamp()`.
pub fn epoch_float(t: DateTime<Utc>) -> String {
    format!("{}.{:06}", t.timestamp(), t.timestamp_subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utcformat_round_trips() {
        let s = "2026-11-30T11:01:00.152292Z";
        let t = parse_utc(s).expect("parses");
        assert_eq!(utcformat(t), s);
        assert!(parse_utc("2026-11-30T11:01:00Z").is_some());
        assert!(parse_utc("nonsense").is_none());
    }
}
