//! Day partitions of `mindora_job_attempts` (on `ended_at`, UTC days): made ahead so rows
//! never pile up in the DEFAULT partition, and dropped whole after the retention period
//! (a `DROP TABLE`, never a `DELETE` scan). Rows that did land in DEFAULT (the writer ran
//! before a partition existed) are moved into the day's partition when it is made.

use chrono::{Days, NaiveDate, Utc};
use sqlx::postgres::PgPool;
use sqlx::AssertSqlSafe;
use sqlx::{Acquire, PgConnection};

use crate::HistoryError;

const PARENT: &str = "mindora_job_attempts";
const DEFAULT_PARTITION: &str = "mindora_job_attempts_default";

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Day partitions made (already existing ones are not counted).
    pub created: Vec<NaiveDate>,
    /// Day partitions dropped by the retention.
    pub dropped: Vec<NaiveDate>,
}

/// The partition table of `day`: `mindora_job_attempts_pYYYYMMDD`.
pub fn partition_name(day: NaiveDate) -> String {
    format!("{PARENT}_p{}", day.format("%Y%m%d"))
}

/// The day of a partition name made by [`partition_name`].
pub fn partition_day(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(PARENT)?.strip_prefix("_p")?;
    if digits.len() != 8 {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// The days kept ahead around `today`: yesterday to the day after tomorrow.
pub fn days_ahead(today: NaiveDate) -> Vec<NaiveDate> {
    (-1i64..=2)
        .filter_map(|d| {
            if d < 0 {
                today.checked_sub_days(Days::new(d.unsigned_abs()))
            } else {
                today.checked_add_days(Days::new(d as u64))
            }
        })
        .collect()
}

/// Whether the partition of `day` is past a retention of `days` days on `today`: every
/// row in it ended more than `days` days ago. 0 keeps everything.
pub fn expired(day: NaiveDate, today: NaiveDate, days: u32) -> bool {
    days > 0
        && today
            .checked_sub_days(Days::new(u64::from(days)))
            .is_some_and(|cutoff| day < cutoff)
}

/// One maintenance pass for today (UTC): see [`maintain_on`].
pub async fn maintain(pool: &PgPool, retention_days: u32) -> Result<Maintenance, HistoryError> {
    maintain_on(pool, Utc::now().date_naive(), retention_days).await
}

/// Makes the partitions of [`days_ahead`] `today`, drops those [`expired`], and deletes
/// expired rows left in DEFAULT. One replica at a time (a transaction-scoped advisory lock
/// per schema); the others wait for it, then find nothing left to do.
pub async fn maintain_on(
    pool: &PgPool,
    today: NaiveDate,
    retention_days: u32,
) -> Result<Maintenance, HistoryError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('mindora_history.partitions:' || current_schema()))",
    )
    .execute(&mut *tx)
    .await?;
    let mut done = Maintenance::default();
    for day in days_ahead(today) {
        if ensure_day(&mut tx, day).await? {
            done.created.push(day);
        }
    }
    if retention_days > 0 {
        for (name, day) in day_partitions(&mut tx).await? {
            if expired(day, today, retention_days) {
                lock_parent(&mut tx).await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{name}\"")))
                    .execute(&mut *tx)
                    .await?;
                done.dropped.push(day);
            }
        }
        if let Some(cutoff) = today.checked_sub_days(Days::new(u64::from(retention_days))) {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {DEFAULT_PARTITION} WHERE ended_at < $1::date::timestamptz"
            )))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// Takes the parent table's ACCESS EXCLUSIVE lock before any partition's lock (a no-op
/// when this transaction holds it). Readers and inserts lock the parent first, then its
/// partitions; creating or dropping a partition locks both, so taking the parent last
/// (after DEFAULT or a dropped day) could deadlock with a reader (`40P01`). The lock
/// timeout bounds how long readers queue behind this request; the writer retries later.
async fn lock_parent(conn: &mut PgConnection) -> Result<(), HistoryError> {
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE ONLY {PARENT} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes the partition of `day` unless it exists; true when made. When DEFAULT already holds
/// rows of that day, they are moved into the new partition before it is attached.
pub async fn ensure_day(conn: &mut PgConnection, day: NaiveDate) -> Result<bool, HistoryError> {
    let name = partition_name(day);
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = $1 AND n.nspname = current_schema())",
    )
    .bind(&name)
    .fetch_one(&mut *conn)
    .await?;
    if exists {
        return Ok(false);
    }
    let Some(next) = day.checked_add_days(Days::new(1)) else {
        return Ok(false);
    };
    let bounds = format!(
        "FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
        day = day.format("%Y-%m-%d"),
        next = next.format("%Y-%m-%d")
    );
    let mut tx = conn.begin().await?;
    lock_parent(&mut tx).await?;
    // The default partition is locked (after the parent) so no row of that day lands there
    // meanwhile.
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {DEFAULT_PARTITION} IN SHARE ROW EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    let stray: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} \
         WHERE ended_at >= $1::date::timestamptz AND ended_at < $2::date::timestamptz)"
    )))
    .bind(day)
    .bind(next)
    .fetch_one(&mut *tx)
    .await?;
    if stray {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE \"{name}\" (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM {DEFAULT_PARTITION} \
             WHERE ended_at >= $1::date::timestamptz AND ended_at < $2::date::timestamptz \
             RETURNING *) INSERT INTO \"{name}\" SELECT * FROM moved"
        )))
        .bind(day)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {PARENT} ATTACH PARTITION \"{name}\" {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE \"{name}\" PARTITION OF {PARENT} {bounds}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The day partitions of the current schema's table, oldest first.
pub async fn day_partitions(
    conn: &mut PgConnection,
) -> Result<Vec<(String, NaiveDate)>, HistoryError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         JOIN pg_namespace n ON n.oid = p.relnamespace \
         WHERE p.relname = $1 AND n.nspname = current_schema()",
    )
    .bind(PARENT)
    .fetch_all(&mut *conn)
    .await?;
    let mut days: Vec<(String, NaiveDate)> = names
        .into_iter()
        .filter_map(|n| partition_day(&n).map(|d| (n, d)))
        .collect();
    days.sort_by_key(|(_, d)| *d);
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn names_round_trip() {
        let d = day("2026-12-07");
        assert_eq!(partition_name(d), "mindora_job_attempts_p20261207");
        assert_eq!(partition_day(&partition_name(d)), Some(d));
        assert_eq!(partition_day("mindora_job_attempts_default"), None);
        assert_eq!(partition_day("mindora_job_attempts_p2026120"), None);
        assert_eq!(partition_day("other_p20261207"), None);
    }

    #[test]
    fn ahead_is_yesterday_to_two_days_on() {
        assert_eq!(
            days_ahead(day("2026-12-31")),
            vec![
                day("2026-12-30"),
                day("2026-12-31"),
                day("2027-01-01"),
                day("2027-01-02")
            ]
        );
    }

    #[test]
    fn retention_keeps_the_last_n_days() {
        let today = day("2026-12-20");
        assert!(!expired(day("2026-12-06"), today, 14));
        assert!(expired(day("2026-12-05"), today, 14));
        assert!(!expired(day("2020-01-01"), today, 0));
        assert!(!expired(day("2026-12-21"), today, 14));
    }
}
