//! The job history in PostgreSQL (`mindora_job_attempts`, see
//! `history/migrations/0001_job_history.sql`), read by the console, plus its audit table.
//!
//! The pool connects lazily and sets `search_path` to the history schema on every
//! connection, so a database that is down at start costs nothing: [`History::state`] says
//! `Unreachable` and pages show what Redis holds. Every query is built so one of the
//! table's indexes serves it (the filter's column with `ended_at DESC`, or the trigram
//! index for error text) and pages by keyset on `ended_at`, never by OFFSET.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row};

use super::{AttemptRow, DataError, ErrorGroup, Filter, HistoryState};

/// The history schema when none is configured.
pub const DEFAULT_SCHEMA: &str = "mindora_history";

/// The longest page or cap a caller may ask for.
pub const MAX_ROWS: i64 = 10_000;

const COLUMNS: &str = "ended_at, job_id, source, queue, function, attempt, status, worker, \
     enqueued_at, started_at, wait_ms, run_ms, error_type, error_message, args_summary, \
     retry_at, trace_id";

/// Masks what differs between occurrences of one error: tokens of hex digits and dashes
/// holding a digit, `0x` hex too (ids, uuids, numbers), become `#`, as do digits left inside words.
const MASKED_MESSAGE: &str = "regexp_replace(regexp_replace(coalesce(error_message, ''), \
     '\\m(0x)?[0-9A-Fa-f-]*[0-9][0-9A-Fa-f-]*\\M', '#', 'g'), '[0-9]+', '#', 'g')";

/// One audit row (`mindora_console_actions`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub username: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub jobs: i32,
    pub detail: Option<serde_json::Value>,
}

/// The console's handle on the history.
#[derive(Clone)]
pub struct History {
    pub(super) pool: PgPool,
    schema: String,
    /// Figures of closed hours, computed once (see `hourly.rs`).
    pub(super) hours: super::hourly::HourCache,
}

impl History {
    /// A lazily connecting pool on `url` with `schema` as search path. Fails only on a
    /// malformed URL or schema name, never because the database is down.
    pub fn connect(url: &str, schema: &str) -> Result<Self, DataError> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(DataError::Db(sqlx::Error::Configuration(
                format!("history schema {schema:?}: only letters, digits and _ are allowed").into(),
            )));
        }
        let options: PgConnectOptions = url.parse()?;
        let set_path = format!("SET search_path TO \"{schema}\", public");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                // The schema name was checked above: letters, digits and _ only.
                let set_path = AssertSqlSafe(set_path.clone());
                Box::pin(async move {
                    sqlx::query(set_path).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(History {
            pool,
            schema: schema.to_string(),
            hours: Default::default(),
        })
    }

    /// Creates the schema if needed and applies the history migrations
    /// (`mindora_history::MIGRATOR`) in it.
    pub async fn migrate(&self) -> Result<(), DataError> {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            self.schema
        )))
        .execute(&self.pool)
        .await?;
        mindora_history::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| DataError::Db(e.into()))
    }

    /// The pool (for tests and benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the history lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Whether the history answers now, and how many rows writers dropped.
    pub async fn state(&self) -> HistoryState {
        let q = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(dropped)::bigint FROM mindora_history_writers",
        );
        match q.fetch_one(&self.pool).await {
            Ok(dropped) => HistoryState::On {
                dropped: dropped.unwrap_or(0),
            },
            Err(e) => HistoryState::Unreachable(e.to_string()),
        }
    }

    /// Attempts matching `filter`, newest first, `limit` per page; `before` is the last
    /// row of the previous page (`ended_at`, `job_id`).
    pub async fn search(
        &self,
        filter: &Filter,
        limit: i64,
        before: Option<(DateTime<Utc>, String)>,
    ) -> Result<Vec<AttemptRow>, DataError> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM mindora_job_attempts WHERE true"
        ));
        push_filter(&mut q, filter);
        if let Some((at, id)) = before {
            // `ended_at <= at` is the index condition; the rest breaks ties.
            q.push(" AND ended_at <= ")
                .push_bind(at)
                .push(" AND (ended_at < ")
                .push_bind(at)
                .push(" OR job_id < ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY ended_at DESC, job_id DESC LIMIT ")
            .push_bind(limit.clamp(1, MAX_ROWS));
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// How many attempts match `filter` (the count preview of a bulk action).
    pub async fn count(&self, filter: &Filter) -> Result<i64, DataError> {
        let mut q =
            QueryBuilder::<Postgres>::new("SELECT count(*) FROM mindora_job_attempts WHERE true");
        push_filter(&mut q, filter);
        Ok(q.build_query_scalar().fetch_one(&self.pool).await?)
    }

    /// Distinct job ids matching `filter`, most recent first, at most `cap`: the targets of
    /// a bulk action.
    pub async fn job_ids(&self, filter: &Filter, cap: i64) -> Result<Vec<String>, DataError> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT job_id FROM (SELECT job_id, max(ended_at) AS last FROM mindora_job_attempts WHERE true",
        );
        push_filter(&mut q, filter);
        q.push(" GROUP BY job_id) j ORDER BY last DESC LIMIT ")
            .push_bind(cap.clamp(1, MAX_ROWS));
        Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
    }

    /// Every recorded attempt of one job, in attempt order.
    pub async fn timeline(&self, job_id: &str) -> Result<Vec<AttemptRow>, DataError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mindora_job_attempts WHERE job_id = $1 \
             ORDER BY attempt, ended_at"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Failed attempts matching `filter` (any status with an error when the filter names
    /// none) grouped by error type and masked message, largest groups first.
    pub async fn error_groups(
        &self,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<ErrorGroup>, DataError> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT coalesce(error_type, '') AS error_type, {MASKED_MESSAGE} AS message, \
             count(*) AS count, count(DISTINCT job_id) AS jobs, max(ended_at) AS last_seen, \
             (array_agg(DISTINCT function))[1:5] AS functions \
             FROM mindora_job_attempts WHERE error_type IS NOT NULL"
        ));
        push_filter(&mut q, filter);
        q.push(" GROUP BY 1, 2 ORDER BY count(*) DESC, max(ended_at) DESC LIMIT ")
            .push_bind(limit.clamp(1, MAX_ROWS));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ErrorGroup {
                    error_type: r.try_get("error_type")?,
                    message: r.try_get("message")?,
                    count: r.try_get("count")?,
                    jobs: r.try_get("jobs")?,
                    last_seen: r.try_get("last_seen")?,
                    functions: r.try_get("functions")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DataError::from)
    }

    /// Records one console action (who, what, on how many jobs).
    pub async fn record_action(
        &self,
        user: &str,
        role: &str,
        action: &str,
        target: &str,
        jobs: i32,
        detail: Option<serde_json::Value>,
    ) -> Result<(), DataError> {
        sqlx::query(
            "INSERT INTO mindora_console_actions (username, role, action, target, jobs, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user)
        .bind(role)
        .bind(action)
        .bind(target)
        .bind(jobs)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest console actions, newest first.
    pub async fn recent_actions(&self, limit: i64) -> Result<Vec<ActionRow>, DataError> {
        Ok(sqlx::query_as(
            "SELECT id, at, username, role, action, target, jobs, detail \
             FROM mindora_console_actions ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit.clamp(1, MAX_ROWS))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// `ILIKE` pattern matching `s` as a plain substring (`%`, `_` and `\` escaped).
fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Appends ` AND ...` for every field the filter sets (values bound, never spliced).
fn push_filter(q: &mut QueryBuilder<Postgres>, f: &Filter) {
    let eq = [
        ("job_id", &f.id),
        ("function", &f.function),
        ("queue", &f.queue),
        ("status", &f.status),
        ("worker", &f.worker),
        ("source", &f.source),
    ];
    for (col, v) in eq {
        if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            q.push(format!(" AND {col} = ")).push_bind(v.to_string());
        }
    }
    if let Some(from) = f.from {
        q.push(" AND ended_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND ended_at < ").push_bind(to);
    }
    if let Some(e) = f.error.as_deref().filter(|e| !e.trim().is_empty()) {
        q.push(" AND error_message ILIKE ")
            .push_bind(contains_pattern(e.trim()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_a_plain_substring() {
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(History::connect("postgres://x@127.0.0.1/test", "bad;name").is_err());
    }
}
