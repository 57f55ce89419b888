//! The overview's charts: per function and hour over the last 72 h, finished and failed
//! attempts and the p95 run time. A p95 needs every run time of the hour sorted, which over
//! 72 h of a busy history takes about a second; but an hour that is over no longer changes.
//! So closed hours (older than [`OPEN_HOURS`]) are computed once per console process and
//! kept; each call queries only the open hours and the closed ones it has not seen.
//!
//! [`History::warm`], called at start, computes the closed hours in the background, a few
//! hours per query, newest first. While it runs, [`History::hourly`] does not wait for it:
//! it answers with the closed hours done so far (the others have no rows yet) and
//! [`History::warming`] says so.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::Row;

use super::{DataError, History, HourStat};

/// Hours this recent may still receive rows (writers batch, clocks differ): always queried.
pub const OPEN_HOURS: i64 = 2;
/// How far back the charts go.
pub const WINDOW_HOURS: i64 = 72;
/// Closed hours per warm-up query: a few thousand rows each on a busy history, sorted in
/// memory, and the charts fill in steps.
const WARM_CHUNK_HOURS: i64 = 6;

/// Closed hours already computed (hour → its rows, empty for an hour without attempts),
/// and whether a warm-up is filling them.
#[derive(Default)]
pub struct HourState {
    hours: Mutex<BTreeMap<DateTime<Utc>, Vec<HourStat>>>,
    warming: AtomicBool,
}

/// Shared by the clones of one [`History`].
pub type HourCache = Arc<HourState>;

fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The first hour that may still receive rows.
fn open_from(now: DateTime<Utc>) -> DateTime<Utc> {
    hour_floor(now) - TimeDelta::hours(OPEN_HOURS - 1)
}

/// Clears `warming` when the warm-up ends, also if it panics or is aborted.
struct WarmingGuard(HourCache);

impl Drop for WarmingGuard {
    fn drop(&mut self) {
        self.0.warming.store(false, Ordering::Release);
    }
}

impl HourState {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<DateTime<Utc>, Vec<HourStat>>> {
        self.hours.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first hour in `[from, to)` not computed yet.
    fn first_missing(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cache = self.lock();
        let mut h = from;
        while h < to && cache.contains_key(&h) {
            h += TimeDelta::hours(1);
        }
        (h < to).then_some(h)
    }

    /// Keeps `rows` as the figures of the closed hours `[from, to)`.
    fn store(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows: Vec<HourStat>,
        now: DateTime<Utc>,
    ) {
        let mut cache = self.lock();
        let mut h = from;
        while h < to {
            cache.entry(h).or_default().clear();
            h += TimeDelta::hours(1);
        }
        for r in rows {
            cache.entry(r.hour).or_default().push(r);
        }
        let oldest = hour_floor(now - TimeDelta::hours(WINDOW_HOURS + 1));
        cache.retain(|h, _| *h >= oldest);
    }
}

impl History {
    /// Starts computing the closed hours of the last 72 h in the background (call once at
    /// start, inside the tokio runtime), so the first overview does not wait about a
    /// second for them. A failure is logged; `hourly` then computes what is missing itself.
    /// Calling it while a warm-up runs starts nothing. The handle is for tests and benchmarks.
    pub fn warm(&self) -> tokio::task::JoinHandle<()> {
        if self.hours.warming.swap(true, Ordering::AcqRel) {
            return tokio::spawn(async {});
        }
        let h = self.clone();
        tokio::spawn(async move {
            let _guard = WarmingGuard(h.hours.clone());
            if let Err(e) = h.warm_closed_hours().await {
                tracing::warn!("history charts: warm-up stopped: {e}");
            }
        })
    }

    /// A warm-up is computing closed hours: `hourly` may lack some of them (no rows yet).
    pub fn warming(&self) -> bool {
        self.hours.warming.load(Ordering::Acquire)
    }

    async fn warm_closed_hours(&self) -> Result<(), DataError> {
        let now = Utc::now();
        let first = hour_floor(now - TimeDelta::hours(WINDOW_HOURS));
        let mut to = open_from(now);
        while to > first {
            let from = (to - TimeDelta::hours(WARM_CHUNK_HOURS)).max(first);
            if self.hours.first_missing(from, to).is_some() {
                let rows = self.hour_rows(from, Some(to)).await?;
                self.hours.store(from, to, rows, now);
            }
            to = from;
        }
        Ok(())
    }

    /// Per function and hour since `since` (at most 72 h back), oldest hour first. During
    /// a warm-up ([`History::warming`]) closed hours it has not reached yet have no rows.
    pub async fn hourly(&self, since: DateTime<Utc>) -> Result<Vec<HourStat>, DataError> {
        let now = Utc::now();
        let since = hour_floor(since.max(now - TimeDelta::hours(WINDOW_HOURS)));
        let open_from = open_from(now);
        if !self.warming() {
            if let Some(missing_from) = self.hours.first_missing(since, open_from) {
                let rows = self.hour_rows(missing_from, Some(open_from)).await?;
                self.hours.store(missing_from, open_from, rows, now);
            }
        }
        let open = self.hour_rows(since.max(open_from), None).await?;
        let cache = self.hours.lock();
        let mut out: Vec<HourStat> = cache
            .range(since..open_from)
            .flat_map(|(_, rows)| rows.iter().cloned())
            .collect();
        out.extend(open);
        Ok(out)
    }

    async fn hour_rows(
        &self,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<HourStat>, DataError> {
        let rows = sqlx::query(
            "SELECT date_trunc('hour', ended_at) AS hour, function, \
             count(*) FILTER (WHERE status = 'finished') AS finished, \
             count(*) FILTER (WHERE status IN ('failed', 'retried')) AS failed, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY run_ms) \
               FILTER (WHERE status = 'finished') AS p95 \
             FROM mindora_job_attempts WHERE ended_at >= $1 \
               AND ($2::timestamptz IS NULL OR ended_at < $2) \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HourStat {
                    hour: r.try_get("hour")?,
                    function: r.try_get("function")?,
                    finished: r.try_get("finished")?,
                    failed: r.try_get("failed")?,
                    p95_run_ms: r.try_get("p95")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DataError::from)
    }
}
