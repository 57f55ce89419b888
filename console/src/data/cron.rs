//! Cron entries from rq's registry of cron schedulers (rq >= 2.4; mindora's cron writes
//! the same, see `worker/src/cron/registry.rs`): `rq:cron_schedulers` (names scored by
//! last heartbeat) and each `rq:cron_scheduler:<name>` hash, whose `cron_jobs` field is a
//! JSON list of rq's `CronJob.to_dict` (`func_name`, `name`, `queue_name`, `cron` as
//! Python's croniter reads it, or `interval` in seconds, `latest_enqueue_time`,
//! `next_enqueue_time`).
//!
//! Missed ticks are counted from the schedule: every tick after `latest_enqueue_time` that
//! was due more than [`GRACE_SECS`] ago (croniter expressions are read with croner, the
//! cron crate the worker uses).

use chrono::{DateTime, Duration, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use mindora_sdk::wire::keys;
use mindora_sdk::wire::time::parse_utc;
use mindora_sdk::RedisConn;
use serde_json::Value;

use super::{CronEntryView, DataError};

/// A tick this late is missed, not merely being enqueued.
pub const GRACE_SECS: i64 = 30;
/// Counting stops here (a schedule dead for weeks shows "at least this many").
pub const MAX_MISSED: u32 = 10_000;

/// Every entry of every registered cron scheduler.
pub async fn entries(conn: &RedisConn) -> Result<Vec<CronEntryView>, DataError> {
    let mut c = conn.clone();
    let schedulers: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys::cron_schedulers())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await?;
    if schedulers.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (name, _) in &schedulers {
        pipe.hget(keys::cron_scheduler(name), "cron_jobs");
    }
    let lists: Vec<Option<String>> = pipe.query_async(&mut c).await?;
    let now = Utc::now();
    let mut out = Vec::new();
    for ((scheduler, beat), list) in schedulers.into_iter().zip(lists) {
        let heartbeat = DateTime::from_timestamp_millis((beat * 1000.0) as i64);
        let jobs: Vec<Value> = list
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or_default();
        for j in &jobs {
            out.push(entry_view(&scheduler, heartbeat, j, now));
        }
    }
    Ok(out)
}

fn entry_view(
    scheduler: &str,
    heartbeat: Option<DateTime<Utc>>,
    j: &Value,
    now: DateTime<Utc>,
) -> CronEntryView {
    let text = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or_default();
    let time = |k: &str| j.get(k).and_then(Value::as_str).and_then(parse_utc);
    let latest = time("latest_enqueue_time");
    let interval = j
        .get("interval")
        .and_then(Value::as_f64)
        .filter(|i| *i > 0.0);
    let expr = text("cron");
    let (schedule, next, missed) = if let Some(secs) = interval {
        let step = Duration::milliseconds((secs * 1000.0) as i64);
        let next = time("next_enqueue_time").or_else(|| latest.map(|l| l + step));
        let missed = latest.map_or(0, |l| interval_missed(l, secs, now));
        (format!("every {secs} s"), next, missed)
    } else {
        match parse_croniter(expr) {
            Ok(cron) => {
                let next = time("next_enqueue_time").or_else(|| next_after(&cron, now));
                let missed = latest.map_or(0, |l| cron_missed(&cron, l, now));
                (expr.to_string(), next, missed)
            }
            Err(e) => (
                format!("{expr} (unreadable: {e})"),
                time("next_enqueue_time"),
                0,
            ),
        }
    };
    CronEntryView {
        scheduler: scheduler.to_string(),
        name: text("name").to_string(),
        function: text("func_name").to_string(),
        queue: text("queue_name").to_string(),
        schedule,
        latest,
        next,
        missed,
        scheduler_heartbeat: heartbeat,
    }
}

/// A croniter expression (five fields, or six with seconds last) as croner reads it
/// (seconds first).
pub fn parse_croniter(expr: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let reordered = if fields.len() == 6 {
        let mut f = vec![fields[5]];
        f.extend_from_slice(&fields[..5]);
        f.join(" ")
    } else {
        fields.join(" ")
    };
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(&reordered)
        .map_err(|e| e.to_string())
}

fn next_after(cron: &Cron, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&t, false).ok()
}

/// Ticks of `cron` after `latest` that were due before `now - GRACE_SECS`.
pub fn cron_missed(cron: &Cron, latest: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
    let due_before = now - Duration::seconds(GRACE_SECS);
    let mut n = 0;
    let mut t = latest;
    while n < MAX_MISSED {
        match next_after(cron, t) {
            Some(next) if next <= due_before => {
                n += 1;
                t = next;
            }
            _ => break,
        }
    }
    n
}

/// Ticks every `secs` after `latest` that were due before `now - GRACE_SECS`.
pub fn interval_missed(latest: DateTime<Utc>, secs: f64, now: DateTime<Utc>) -> u32 {
    let late = (now - Duration::seconds(GRACE_SECS) - latest).num_milliseconds() as f64 / 1000.0;
    if late <= 0.0 {
        return 0;
    }
    ((late / secs).floor() as u64).min(u64::from(MAX_MISSED)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_missed_ticks() {
        let cron = parse_croniter("*/5 * * * *").expect("parses");
        let latest = parse_utc("2026-01-01T10:00:00Z").expect("time");
        let now = parse_utc("2026-01-01T10:21:00Z").expect("time");
        // 10:05, 10:10, 10:15, 10:20 were due.
        assert_eq!(cron_missed(&cron, latest, now), 4);
        assert_eq!(cron_missed(&cron, latest, latest), 0);
        assert_eq!(interval_missed(latest, 60.0, now), 20);
        // croniter's seconds field is last.
        let every_10s = parse_croniter("* * * * * */10").expect("parses");
        assert_eq!(
            cron_missed(&every_10s, latest, latest + Duration::seconds(90)),
            6
        );
    }
}
