//! The overview's charts: per function and hour over the last 72 h, finished and failed
//! attempts and the p95 run time. A p95 needs every run time of the hour sorted, which over
//! 72 h of a busy history takes about a second; but an hour that is over no longer changes.
//! So closed hours (older than [`OPEN_HOURS`]) are computed once per console process and
//! kept; each call queries only the open hours and the closed ones it has not seen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::Row;

use super::{DataError, History, HourStat};

/// Hours this recent may still receive rows (writers batch, clocks differ): always queried.
pub const OPEN_HOURS: i64 = 2;
/// How far back the charts go.
pub const WINDOW_HOURS: i64 = 72;

/// Closed hours already computed: hour → its rows (empty for an hour without attempts).
pub type HourCache = Arc<Mutex<BTreeMap<DateTime<Utc>, Vec<HourStat>>>>;

fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl History {
    /// Per function and hour since `since` (at most 72 h back), oldest hour first.
    pub async fn hourly(&self, since: DateTime<Utc>) -> Result<Vec<HourStat>, DataError> {
        let now = Utc::now();
        let since = hour_floor(since.max(now - TimeDelta::hours(WINDOW_HOURS)));
        let open_from = hour_floor(now) - TimeDelta::hours(OPEN_HOURS - 1);
        let missing_from = {
            let cache = self.hours.lock().unwrap_or_else(|p| p.into_inner());
            let mut h = since;
            while h < open_from && cache.contains_key(&h) {
                h += TimeDelta::hours(1);
            }
            h
        };
        if missing_from < open_from {
            let rows = self.hour_rows(missing_from, Some(open_from)).await?;
            let mut cache = self.hours.lock().unwrap_or_else(|p| p.into_inner());
            let mut h = missing_from;
            while h < open_from {
                cache.entry(h).or_default().clear();
                h += TimeDelta::hours(1);
            }
            for r in rows {
                cache.entry(r.hour).or_default().push(r);
            }
            let oldest = hour_floor(now - TimeDelta::hours(WINDOW_HOURS + 1));
            cache.retain(|h, _| *h >= oldest);
        }
        let open = self.hour_rows(since.max(open_from), None).await?;
        let cache = self.hours.lock().unwrap_or_else(|p| p.into_inner());
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
