//! The tick loop. Every replica computes the same ticks from the same file; for each due
//! tick it calls the wire-layer script `CRON_ENQUEUE`, whose `SET NX` on
//! `mindora:cron:<entry>:<tick epoch>` lets exactly one replica enqueue the job, in the
//! same atomic step. A replica that loses the claim just moves on.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mindora_sdk::wire::job::NewJob;
use mindora_sdk::wire::time::{epoch_float, utcformat};
use mindora_sdk::wire::{keys, scripts, JobCall, JobStatus};
use mindora_sdk::RedisConn;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::{debug, info, warn};

use super::registry::{self, EntryTimes};
use super::schedule::{CronEntry, CronFile};

/// A tick is still enqueued when it is at most this late (a slow replica, a Redis blip,
/// a restart); ticks missed for longer are skipped.
pub const CATCH_UP_SECS: i64 = 60;
/// How long a tick's claim is kept: far longer than [`CATCH_UP_SECS`], so no replica can
/// claim a tick again.
const CLAIM_TTL_SECS: i64 = 3600;
/// rq's `DEFAULT_CRON_JOB_HISTORY_LIMIT` / `_TTL`.
const HISTORY_LIMIT: i64 = 1000;
const HISTORY_TTL_SECS: i64 = 31_536_000;

/// Counter: ticks this replica enqueued, per `entry`.
pub const CRON_ENQUEUED: &str = "mindora_cron_enqueued_total";
/// Counter: ticks skipped because they were more than [`CATCH_UP_SECS`] late, per `entry`,
/// counted once across replicas; this includes ticks that fell while every replica was
/// down, up to [`CLAIM_TTL_SECS`] before the first replica came back.
pub const CRON_MISSED: &str = "mindora_cron_missed_ticks_total";
/// Gauge: epoch seconds of the entry's last tick (enqueued here or by another replica).
pub const CRON_LAST_RUN: &str = "mindora_cron_last_run_timestamp_seconds";
/// Gauge: epoch seconds of the entry's next tick.
pub const CRON_NEXT_RUN: &str = "mindora_cron_next_run_timestamp_seconds";

/// Runs the schedule until `stop`; `name` is this scheduler's name in rq's registry.
pub async fn run(conn: RedisConn, file: CronFile, name: String, stop: CancellationToken) {
    let created = Utc::now();
    // Resume after each entry's last enqueued tick (by any replica, within the claims'
    // lifetime): ticks since then that are late are skipped and counted, once.
    let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(file.entries.len());
    for e in &file.entries {
        let since = match registry::last_enqueued(&conn, &e.name).await {
            Ok(Some(t)) if t < created && created - t < TimeDelta::seconds(CLAIM_TTL_SECS) => t,
            Ok(_) => created,
            Err(err) => {
                warn!(entry = %e.name, error = %err, "cannot read the entry's last enqueue; ticks missed before this start are not counted");
                created
            }
        };
        next.push(e.next_after(since));
    }
    let mut times: Vec<EntryTimes> = vec![EntryTimes::default(); file.entries.len()];
    // rq's register_birth; until a save succeeds, every loop tries again.
    let mut saved = false;
    // Every entry's counters exist from the start (at 0), on every replica, so dashboards
    // and `increase()` see each entry before its first tick and on replicas that never win
    // a claim.
    for entry in &file.entries {
        metrics::counter!(CRON_ENQUEUED, "entry" => entry.name.clone()).increment(0);
        metrics::counter!(CRON_MISSED, "entry" => entry.name.clone()).increment(0);
    }
    info!(scheduler = %name, entries = file.entries.len(), file = %file.path, "cron scheduler started");
    loop {
        let now = Utc::now();
        let mut changed = false;
        for (i, entry) in file.entries.iter().enumerate() {
            while let Some(tick) = next[i].filter(|t| *t <= now) {
                changed = true;
                if now - tick > TimeDelta::seconds(CATCH_UP_SECS) {
                    count_missed(&conn, entry, tick).await;
                } else {
                    match enqueue_tick(&conn, entry, tick).await {
                        Ok(Some(job_id)) => {
                            debug!(entry = %entry.name, tick = %tick, job_id, "cron tick enqueued");
                            metrics::counter!(CRON_ENQUEUED, "entry" => entry.name.clone())
                                .increment(1);
                        }
                        Ok(None) => {
                            debug!(entry = %entry.name, tick = %tick, "cron tick enqueued by another scheduler")
                        }
                        Err(TickError::Redis(e)) => {
                            warn!(entry = %entry.name, tick = %tick, error = %e, "cannot enqueue cron tick yet; will retry");
                            break;
                        }
                        Err(e) => {
                            warn!(entry = %entry.name, tick = %tick, error = %e, "cron tick cannot be enqueued; skipped");
                            metrics::counter!(CRON_MISSED, "entry" => entry.name.clone())
                                .increment(1);
                        }
                    }
                    times[i].latest = Some(tick);
                    metrics::gauge!(CRON_LAST_RUN, "entry" => entry.name.clone())
                        .set(tick.timestamp() as f64);
                }
                next[i] = entry.next_after(tick);
            }
            times[i].next = next[i];
            if let Some(n) = next[i] {
                metrics::gauge!(CRON_NEXT_RUN, "entry" => entry.name.clone())
                    .set(n.timestamp() as f64);
            }
        }
        // As rq's CronScheduler loop: save after enqueueing, heartbeat every loop.
        if changed || !saved {
            match registry::save(&conn, &name, created, &file, &times).await {
                Ok(()) => saved = true,
                Err(e) => debug!(error = %e, "cannot save the cron scheduler registry entry"),
            }
        }
        match registry::heartbeat(&conn, &name).await {
            Ok(true) => {}
            Ok(false) => saved = false,
            Err(e) => debug!(error = %e, "cron scheduler heartbeat failed"),
        }
        let wait = next
            .iter()
            .flatten()
            .min()
            .map(|t| (*t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Err(e) = registry::remove(&conn, &name).await {
        debug!(error = %e, "cannot leave the cron scheduler registry");
    }
}

/// Counts a tick skipped for being too late, once across replicas: the tick's claim key
/// (`SET NX`, as an enqueue would take it) decides who counts it. Without Redis the
/// replica counts it alone.
async fn count_missed(conn: &RedisConn, entry: &CronEntry, tick: DateTime<Utc>) {
    let mut c = conn.clone();
    let first: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(keys::cron_tick(&entry.name, tick.timestamp()))
        .arg("missed")
        .arg("NX")
        .arg("EX")
        .arg(CLAIM_TTL_SECS)
        .query_async(&mut c)
        .await;
    if matches!(first, Ok(None)) {
        debug!(entry = %entry.name, tick = %tick, "late cron tick already handled by another scheduler");
        return;
    }
    warn!(entry = %entry.name, tick = %tick, "cron tick missed (more than {CATCH_UP_SECS} s late); skipped");
    metrics::counter!(CRON_MISSED, "entry" => entry.name.clone()).increment(1);
}

/// Enqueues `tick` of `entry` unless another scheduler did; the new job's id when this
/// call enqueued it.
pub async fn enqueue_tick(
    conn: &RedisConn,
    entry: &CronEntry,
    tick: DateTime<Utc>,
) -> Result<Option<String>, TickError> {
    let mut job = NewJob::new(
        entry.queue.clone(),
        JobCall {
            function: entry.func.clone(),
            args: entry.args.clone(),
            kwargs: entry.kwargs.clone(),
        },
    );
    job.timeout_secs = entry.timeout;
    job.result_ttl_secs = entry.result_ttl;
    job.failure_ttl_secs = entry.failure_ttl;
    job.ttl_secs = entry.ttl;
    // No request caused a tick: each is a trace of its own, a PRODUCER root span whose
    // context the job carries (nothing is written when tracing is off).
    let span = tracing::info_span!(
        parent: None,
        "cron tick",
        otel.name = %format!("create {}", entry.queue),
        otel.kind = "producer",
        messaging.system = "rq",
        messaging.operation.type = "create",
        messaging.destination.name = %entry.queue,
        messaging.message.id = %job.id,
        mindora.cron.entry = %entry.name,
    );
    let carrier = span.in_scope(mindora_sdk::trace::current);
    mindora_sdk::wire::trace::inject_into_meta(&mut job.meta, &carrier);
    let now = Utc::now();
    let fields = job.fields(JobStatus::Queued, now)?;
    let mut inv = scripts::CRON_ENQUEUE.prepare_invoke();
    inv.arg(keys::cron_tick(&entry.name, tick.timestamp()))
        .arg(CLAIM_TTL_SECS)
        .arg(&job.id)
        .arg(&entry.queue)
        .arg(utcformat(now))
        .arg(epoch_float(now))
        .arg(&entry.name)
        .arg(HISTORY_LIMIT)
        .arg(HISTORY_TTL_SECS)
        .arg(entry.ttl.map(|t| t.to_string()).unwrap_or_default());
    for (k, v) in fields {
        if k != "status" && k != "enqueued_at" {
            inv.arg(k).arg(v);
        }
    }
    let mut conn = conn.clone();
    let won: i64 = inv.invoke_async(&mut conn).instrument(span).await?;
    Ok((won == 1).then_some(job.id))
}

/// Why a tick could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The arguments cannot be encoded.
    #[error(transparent)]
    Codec(#[from] mindora_sdk::wire::serializer::CodecError),
}
