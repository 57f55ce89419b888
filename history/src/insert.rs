//! One round trip per batch: the rows as one array per column through `UNNEST`, and this
//! writer's written / dropped counts in the same statement.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use crate::row::{text, ARGS_SUMMARY_MAX, ERROR_MESSAGE_MAX};
use crate::{HistoryError, Row};

const INSERT: &str = r#"
WITH ins AS (
    INSERT INTO mindora_job_attempts (
        ended_at, job_id, source, queue, function, attempt, status, worker,
        enqueued_at, started_at, wait_ms, run_ms, error_type, error_message,
        args_summary, retry_at, trace_id)
    SELECT * FROM UNNEST(
        $1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
        $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::int8[],
        $12::int8[], $13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::text[])
    RETURNING 1
)
INSERT INTO mindora_history_writers AS w (worker, written, dropped, last_drop_at, updated_at)
VALUES ($18, (SELECT count(*) FROM ins), $19,
        CASE WHEN $19 > 0 THEN now() END, now())
ON CONFLICT (worker) DO UPDATE SET
    written = w.written + EXCLUDED.written,
    dropped = w.dropped + EXCLUDED.dropped,
    last_drop_at = COALESCE(EXCLUDED.last_drop_at, w.last_drop_at),
    updated_at = now()
"#;

/// Inserts `rows` and adds them and `dropped` to `writer`'s counts, atomically.
pub(crate) async fn insert(
    pool: &PgPool,
    writer: &str,
    rows: &[Row],
    dropped: u64,
) -> Result<(), HistoryError> {
    let n = rows.len();
    let mut ended_at = Vec::with_capacity(n);
    let mut job_id = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);
    let mut queue = Vec::with_capacity(n);
    let mut function = Vec::with_capacity(n);
    let mut attempt = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut worker = Vec::with_capacity(n);
    let mut enqueued_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut started_at = Vec::with_capacity(n);
    let mut wait_ms = Vec::with_capacity(n);
    let mut run_ms = Vec::with_capacity(n);
    let mut error_type = Vec::with_capacity(n);
    let mut error_message = Vec::with_capacity(n);
    let mut args_summary = Vec::with_capacity(n);
    let mut retry_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut trace_id = Vec::with_capacity(n);
    for r in rows {
        ended_at.push(r.ended_at);
        job_id.push(text(&r.job_id, usize::MAX).into_owned());
        source.push(r.source.to_string());
        queue.push(text(&r.queue, usize::MAX).into_owned());
        function.push(text(&r.function, usize::MAX).into_owned());
        attempt.push(i32::try_from(r.attempt).unwrap_or(i32::MAX));
        status.push(r.status.to_string());
        worker.push(text(&r.worker, usize::MAX).into_owned());
        enqueued_at.push(r.enqueued_at);
        started_at.push(r.started_at);
        wait_ms.push(r.wait_ms);
        run_ms.push(r.run_ms);
        error_type.push(
            r.error_type
                .as_deref()
                .map(|s| text(s, ERROR_MESSAGE_MAX).into_owned()),
        );
        error_message.push(
            r.error_message
                .as_deref()
                .map(|s| text(s, ERROR_MESSAGE_MAX).into_owned()),
        );
        args_summary.push(
            r.args_summary
                .as_deref()
                .map(|s| text(s, ARGS_SUMMARY_MAX).into_owned()),
        );
        retry_at.push(r.retry_at);
        trace_id.push(r.trace_id.as_deref().map(|s| text(s, 64).into_owned()));
    }
    sqlx::query(INSERT)
        .bind(ended_at)
        .bind(job_id)
        .bind(source)
        .bind(queue)
        .bind(function)
        .bind(attempt)
        .bind(status)
        .bind(worker)
        .bind(enqueued_at)
        .bind(started_at)
        .bind(wait_ms)
        .bind(run_ms)
        .bind(error_type)
        .bind(error_message)
        .bind(args_summary)
        .bind(retry_at)
        .bind(trace_id)
        .bind(writer.to_string())
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
    Ok(())
}
