//! Presence in rq's registry of cron schedulers (rq >= 2.4, `rq/cron_scheduler_registry.py`):
//! `rq:cron_schedulers` (sorted set of names scored by last heartbeat) and the hash
//! `rq:cron_scheduler:<name>` (`hostname`, `pid`, `name`, `created_at`, `config_file`,
//! `cron_jobs` as a JSON list of rq's `CronJob.to_dict`), with rq's 120 s TTL. So
//! `CronScheduler.all()` lists every replica running a schedule, with each entry's last
//! and next enqueue time. As rq's own `CronScheduler.start` does, the entry is saved after
//! every tick and heartbeated on every loop, so those times are never stale.

use chrono::{DateTime, Utc};
use mindora_sdk::wire::keys;
use mindora_sdk::wire::time::{epoch_float, utcformat};
use mindora_sdk::RedisConn;
use serde_json::{json, Map, Value};

use super::schedule::{CronEntry, CronFile};

/// rq's `DEFAULT_CRON_SCHEDULER_TTL`: a scheduler silent this long is dropped.
pub const SCHEDULER_TTL_SECS: i64 = 120;

/// What rq shows for one entry.
#[derive(Debug, Clone, Default)]
pub struct EntryTimes {
    /// Last tick this replica saw enqueued (by itself or another replica).
    pub latest: Option<DateTime<Utc>>,
    /// The next tick.
    pub next: Option<DateTime<Utc>>,
}

/// rq's `CronJob.to_dict` for an entry.
fn cron_job_dict(e: &CronEntry, times: &EntryTimes) -> Value {
    let mut d = Map::new();
    d.insert("func_name".into(), json!(e.func));
    d.insert("name".into(), json!(e.name));
    d.insert("queue_name".into(), json!(e.queue));
    let args = (!e.args.is_empty()).then(|| Value::Array(e.args.clone()).to_string());
    let kwargs = (!e.kwargs.is_empty()).then(|| Value::Object(e.kwargs.clone()).to_string());
    d.insert("args".into(), json!(args));
    d.insert("kwargs".into(), json!(kwargs));
    d.insert("interval".into(), Value::Null);
    d.insert("cron".into(), json!(e.croniter_expr()));
    d.insert(
        "latest_enqueue_time".into(),
        json!(times.latest.map(utcformat)),
    );
    d.insert("next_enqueue_time".into(), json!(times.next.map(utcformat)));
    for (k, v) in [
        ("job_timeout", e.timeout),
        ("result_ttl", e.result_ttl),
        ("ttl", e.ttl),
        ("failure_ttl", e.failure_ttl),
    ] {
        if let Some(v) = v {
            d.insert(k.into(), json!(v));
        }
    }
    Value::Object(d)
}

/// Writes (or refreshes) this scheduler's entry in rq's registry.
pub async fn save(
    conn: &RedisConn,
    name: &str,
    created: DateTime<Utc>,
    file: &CronFile,
    times: &[EntryTimes],
) -> redis::RedisResult<()> {
    let jobs: Vec<Value> = file
        .entries
        .iter()
        .zip(times)
        .map(|(e, t)| cron_job_dict(e, t))
        .collect();
    let key = keys::cron_scheduler(name);
    let now = Utc::now();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .zadd(keys::cron_schedulers(), name, epoch_float(now))
        .hset_multiple(
            &key,
            &[
                ("hostname", crate::rq::store::hostname()),
                ("pid", std::process::id().to_string()),
                ("name", name.to_string()),
                ("created_at", utcformat(created)),
                ("config_file", file.path.clone()),
                ("cron_jobs", Value::Array(jobs).to_string()),
            ],
        )
        .expire(&key, SCHEDULER_TTL_SECS);
    let mut conn = conn.clone();
    pipe.query_async(&mut conn).await
}

/// rq's `CronScheduler.heartbeat`, sent every loop: refreshes this scheduler's score and
/// its hash's TTL; false when the hash was gone (the caller saves it again, as rq does).
pub async fn heartbeat(conn: &RedisConn, name: &str) -> redis::RedisResult<bool> {
    let mut pipe = redis::pipe();
    pipe.zadd(keys::cron_schedulers(), name, epoch_float(Utc::now()))
        .ignore()
        .expire(keys::cron_scheduler(name), SCHEDULER_TTL_SECS);
    let mut conn = conn.clone();
    let (expired,): (bool,) = pipe.query_async(&mut conn).await?;
    Ok(expired)
}

/// When the entry named `entry` was last enqueued by any scheduler (the newest score of
/// its rq job history), to count the ticks missed while no replica ran.
pub async fn last_enqueued(
    conn: &RedisConn,
    entry: &str,
) -> redis::RedisResult<Option<DateTime<Utc>>> {
    let mut conn = conn.clone();
    let newest: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys::cron_job_history(entry))
        .arg(-1)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    Ok(newest
        .first()
        .and_then(|(_, score)| DateTime::from_timestamp_millis((score * 1000.0) as i64)))
}

/// Leaves rq's registry (rq's `register_death`, plus the hash).
pub async fn remove(conn: &RedisConn, name: &str) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .zrem(keys::cron_schedulers(), name)
        .del(keys::cron_scheduler(name));
    let mut conn = conn.clone();
    pipe.query_async(&mut conn).await
}
