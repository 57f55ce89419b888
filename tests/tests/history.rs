//! The durable job history (issue 22) against real PostgreSQL, Redis and RabbitMQ: every
//! attempt of a job becomes a row, in order, with its error, times and worker; an AMQP task's
//! attempts too; PostgreSQL away never holds a job (rows are dropped and counted); retention
//! drops whole day partitions. Each test writes to a PostgreSQL schema of its own.
//!
//! Needs `cargo build -p mindora-worker-app --bin mindora-worker` first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use mindora_history::{partitions, schema, HistoryConfig, Row};
use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::{self, Fixture};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{free_port, http_get, ids, wait_for, wait_statuses, WorkerProcess};
use mindora_worker::core::Observer;
use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::Row as _;

fn pg_url() -> String {
    std::env::var("MINDORA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A history schema of one test, dropped at the end.
struct HistoryDb {
    schema: String,
    pool: PgPool,
    rt: tokio::runtime::Runtime,
}

/// One row as the tests read it back.
#[derive(Debug)]
struct Attempt {
    attempt: i32,
    status: String,
    source: String,
    queue: String,
    function: String,
    worker: String,
    error_type: Option<String>,
    error_message: Option<String>,
    enqueued_at: Option<DateTime<Utc>>,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    wait_ms: Option<i64>,
    run_ms: i64,
    args_summary: Option<String>,
    retry_at: Option<DateTime<Utc>>,
}

impl HistoryDb {
    fn new(name: &str) -> Result<Self> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let schema = format!("hist_{name}_{suffix}");
        let rt = tokio::runtime::Runtime::new()?;
        let pool = {
            let _guard = rt.enter();
            schema::pool(&Self::config_of(&schema, "test"))?
        };
        Ok(HistoryDb { schema, rt, pool })
    }

    fn config_of(schema: &str, writer: &str) -> HistoryConfig {
        let mut c = HistoryConfig::new(pg_url(), writer);
        c.schema = schema.to_string();
        c
    }

    fn config(&self, writer: &str) -> HistoryConfig {
        Self::config_of(&self.schema, writer)
    }

    fn worker_flags(&self) -> Vec<String> {
        vec![
            "--history-database-url".into(),
            pg_url(),
            "--history-schema".into(),
            self.schema.clone(),
        ]
    }

    fn migrate(&self) -> Result<()> {
        self.rt
            .block_on(schema::migrate(&self.pool, &self.schema))?;
        Ok(())
    }

    fn attempts(&self, job_id: &str) -> Result<Vec<Attempt>> {
        let rows = self.rt.block_on(
            sqlx::query(
                "SELECT attempt, status, source, queue, function, worker, error_type, \
                 error_message, enqueued_at, started_at, ended_at, wait_ms, run_ms, \
                 args_summary, retry_at FROM mindora_job_attempts WHERE job_id = $1 \
                 ORDER BY attempt, ended_at",
            )
            .bind(job_id)
            .fetch_all(&self.pool),
        );
        // Before the worker migrated, the table is not there yet: no rows.
        let Ok(rows) = rows else {
            return Ok(Vec::new());
        };
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: r.try_get("attempt")?,
                    status: r.try_get("status")?,
                    source: r.try_get("source")?,
                    queue: r.try_get("queue")?,
                    function: r.try_get("function")?,
                    worker: r.try_get("worker")?,
                    error_type: r.try_get("error_type")?,
                    error_message: r.try_get("error_message")?,
                    enqueued_at: r.try_get("enqueued_at")?,
                    started_at: r.try_get("started_at")?,
                    ended_at: r.try_get("ended_at")?,
                    wait_ms: r.try_get("wait_ms")?,
                    run_ms: r.try_get("run_ms")?,
                    args_summary: r.try_get("args_summary")?,
                    retry_at: r.try_get("retry_at")?,
                })
            })
            .collect()
    }

    /// Waits until `job_id` has `n` rows.
    fn wait_attempts(&self, job_id: &str, n: usize) -> Result<Vec<Attempt>> {
        wait_for(
            Duration::from_secs(20),
            &format!("{n} history rows of {job_id}"),
            || {
                let rows = self.attempts(job_id)?;
                Ok((rows.len() >= n).then_some(rows))
            },
        )
    }

    /// `(written, dropped)` of a writer in `mindora_history_writers`.
    fn writer_counts(&self, worker: &str) -> Result<Option<(i64, i64)>> {
        let row = self.rt.block_on(
            sqlx::query("SELECT written, dropped FROM mindora_history_writers WHERE worker = $1")
                .bind(worker)
                .fetch_optional(&self.pool),
        )?;
        Ok(match row {
            Some(r) => Some((r.try_get("written")?, r.try_get("dropped")?)),
            None => None,
        })
    }
}

impl Drop for HistoryDb {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        self.rt.block_on(async {
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&self.pool)
                .await;
            self.pool.close().await;
        });
    }
}

/// A retried-then-finished attempt list: what the console's job timeline shows.
fn check_flaky_timeline(rows: &[Attempt], worker: &str, version: &str) -> Result<()> {
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    ensure!(
        statuses == ["retried", "retried", "finished"],
        "rq {version}: statuses {statuses:?}"
    );
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempt).collect();
    ensure!(attempts == [1, 2, 3], "rq {version}: attempts {attempts:?}");
    for (i, r) in rows.iter().enumerate() {
        ensure!(r.source == "redis" && r.queue == "default", "{r:?}");
        ensure!(r.function == "mindora.flaky" && r.worker == worker, "{r:?}");
        ensure!(r.args_summary.as_deref() == Some("[2]"), "{r:?}");
        ensure!(
            r.enqueued_at.is_some() && r.wait_ms.is_some_and(|w| w >= 0),
            "{r:?}"
        );
        ensure!(r.run_ms >= 0 && r.ended_at >= r.started_at, "{r:?}");
        if i < 2 {
            ensure!(r.error_type.as_deref() == Some("RuntimeError"), "{r:?}");
            let msg = r.error_message.as_deref().unwrap_or("");
            ensure!(msg.contains(&format!("flaky attempt {}", i + 1)), "{r:?}");
            // Retry(interval=1): due a second after the attempt ended.
            let due = r.retry_at.context("retry_at of a retried attempt")?;
            ensure!(
                (due - r.ended_at - TimeDelta::seconds(1))
                    .num_milliseconds()
                    .abs()
                    < 50,
                "{r:?}"
            );
        } else {
            ensure!(r.error_type.is_none() && r.retry_at.is_none(), "{r:?}");
        }
    }
    ensure!(
        rows[1].started_at >= rows[0].ended_at && rows[2].started_at >= rows[1].ended_at,
        "attempts overlap: {rows:?}"
    );
    Ok(())
}

/// Python rq 2.12 and 3.0 enqueue a job that fails twice and then succeeds
/// (`Retry(max=2, interval=1)`); the worker's history holds its three attempts in order.
#[test]
fn rq_job_failing_twice_then_finishing_has_three_attempts() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let hist = HistoryDb::new("rq")?;
        let name = format!("hist-{}", rq.version.replace('.', ""));
        let flags = hist.worker_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _worker = WorkerProcess::start(&rq.db, &name, &flags)?;
        rq.enqueue(
            "from rq import Retry\n\
             q.enqueue(\"mindora.flaky\", 2, job_id=\"flaky\", retry=Retry(max=2, interval=1))\n",
        )?;
        wait_statuses(
            &rq.db,
            &ids(&["flaky"]),
            &["finished"],
            Duration::from_secs(30),
        )?;
        let rows = hist.wait_attempts("flaky", 3)?;
        check_flaky_timeline(&rows, &name, rq.version)?;
        let (written, dropped) = hist.writer_counts(&name)?.context("writer row")?;
        ensure!(
            written >= 3 && dropped == 0,
            "written {written}, dropped {dropped}"
        );
    }
    Ok(())
}

/// PostgreSQL unreachable (a closed port): jobs finish as fast as ever, the worker keeps
/// running, and the rows that did not fit the buffer are counted as dropped.
#[test]
fn postgres_away_never_holds_a_job() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let closed = free_port()?;
    let metrics = free_port()?;
    let url = format!("postgres://postgres@127.0.0.1:{closed}/test");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let mut worker = WorkerProcess::start(
        &rq.db,
        "hist-away",
        &[
            "--history-database-url",
            &url,
            "--history-buffer",
            "10",
            "--metrics-addr",
            &metrics_addr,
            "--concurrency",
            "8",
        ],
    )?;
    rq.enqueue("for i in range(200):\n    q.enqueue(\"mindora.noop\", job_id=f\"n{i}\")\n")?;
    let all: Vec<String> = (0..200).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    wait_statuses(&rq.db, &all, &["finished"], Duration::from_secs(30))?;
    let took = started.elapsed();
    ensure!(worker.alive(), "the worker stopped");
    let dropped = wait_for(Duration::from_secs(10), "dropped rows counted", || {
        let body = http_get(metrics, "/metrics")?;
        let n = body
            .lines()
            .find(|l| l.starts_with("mindora_history_rows_dropped_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok((n > 0.0).then_some(n))
    })?;
    // At most the buffer and one batch are held while PostgreSQL is away.
    ensure!(dropped >= 180.0, "only {dropped} of 200 rows dropped");
    eprintln!("postgres away: 200 jobs in {took:?}, {dropped} history rows dropped");
    Ok(())
}

fn row(job_id: &str, ended_at: DateTime<Utc>) -> Row {
    Row {
        job_id: job_id.into(),
        source: "memory",
        queue: "q".into(),
        function: "f".into(),
        attempt: 1,
        status: "finished",
        worker: "w".into(),
        enqueued_at: None,
        started_at: ended_at,
        ended_at,
        wait_ms: None,
        run_ms: 0,
        error_type: None,
        error_message: Some("nul \0 inside".into()),
        args_summary: None,
        retry_at: None,
        trace_id: None,
    }
}

fn day_start(day: NaiveDate) -> Result<DateTime<Utc>> {
    Ok(day.and_hms_opt(12, 0, 0).context("noon")?.and_utc())
}

/// Retention drops whole day partitions older than N days and keeps the rest; a row that
/// landed in DEFAULT is moved into its day's partition when that partition is made.
#[test]
fn retention_drops_old_day_partitions() -> Result<()> {
    let hist = HistoryDb::new("ret")?;
    hist.migrate()?;
    let today = Utc::now().date_naive();
    let old = today.checked_sub_days(Days::new(20)).context("date")?;
    let kept = today.checked_sub_days(Days::new(3)).context("date")?;
    let later = today.checked_add_days(Days::new(6)).context("date")?;
    // The writer's own maintenance keeps everything here: the pass below is the one tested.
    let mut config = hist.config("ret");
    config.retention_days = 0;
    let (writer, task) = {
        let _guard = hist.rt.enter();
        mindora_history::start(config)?
    };
    hist.rt.block_on(async {
        let mut conn = hist.pool.acquire().await?;
        partitions::ensure_day(&mut conn, old).await?;
        partitions::ensure_day(&mut conn, kept).await?;
        anyhow::Ok(())
    })?;
    writer.record(row("old", day_start(old)?));
    writer.record(row("kept", day_start(kept)?));
    // No partition that far ahead yet: DEFAULT takes it.
    writer.record(row("later", day_start(later)?));
    hist.rt.block_on(task.shutdown(Duration::from_secs(10)));
    ensure!(writer.written() == 3, "written {}", writer.written());
    let done = hist.rt.block_on(partitions::maintain_on(
        &hist.pool,
        later.checked_sub_days(Days::new(1)).context("date")?,
        14,
    ))?;
    ensure!(done.dropped == vec![old], "{done:?}");
    ensure!(done.created.contains(&later), "{done:?}");
    ensure!(hist.attempts("old")?.is_empty(), "old row kept");
    ensure!(hist.attempts("kept")?.len() == 1, "kept row gone");
    let later_rows = hist.attempts("later")?;
    ensure!(later_rows.len() == 1, "later row gone");
    ensure!(
        later_rows[0].error_message.as_deref() == Some("nul  inside"),
        "{later_rows:?}"
    );
    let in_default: i64 = hist.rt.block_on(
        sqlx::query_scalar("SELECT count(*) FROM mindora_job_attempts_default")
            .fetch_one(&hist.pool),
    )?;
    ensure!(in_default == 0, "{in_default} rows left in DEFAULT");
    let names = hist.rt.block_on(async {
        let mut conn = hist.pool.acquire().await?;
        partitions::day_partitions(&mut conn).await
    })?;
    ensure!(!names.iter().any(|(_, d)| *d == old), "{names:?}");
    Ok(())
}

/// A full buffer drops rows without waiting; once PostgreSQL takes a batch, the drops are
/// added to the writer's `dropped` count the console reads.
#[test]
fn dropped_rows_are_counted_in_the_database() -> Result<()> {
    let hist = HistoryDb::new("drops")?;
    let mut config = hist.config("dropper");
    config.buffer = 5;
    let (writer, task) = {
        let _guard = hist.rt.enter();
        mindora_history::start(config)?
    };
    let now = Utc::now();
    let started = Instant::now();
    for i in 0..1000 {
        writer.record(row(&format!("d{i}"), now));
    }
    ensure!(
        started.elapsed() < Duration::from_millis(500),
        "recording 1000 rows took {:?}",
        started.elapsed()
    );
    hist.rt.block_on(task.shutdown(Duration::from_secs(15)));
    let (written, dropped) = (writer.written(), writer.dropped());
    ensure!(written + dropped == 1000, "{written} + {dropped}");
    ensure!(dropped >= 985, "dropped {dropped}");
    let counts = hist.writer_counts("dropper")?.context("writer row")?;
    ensure!(
        counts == (written as i64, dropped as i64),
        "database {counts:?}, writer {written}/{dropped}"
    );
    Ok(())
}

/// An AMQP task failing every attempt (3 attempts, 1 s / 2 s retry delays) and one that
/// succeeds, run by the engine's AMQP source in-process with the history writer as its sink.
#[test]
fn amqp_attempts_have_rows() -> Result<()> {
    let hist = HistoryDb::new("amqp")?;
    hist.rt
        .block_on(async {
            let (writer, task) = mindora_history::start(hist.config("amqp-w"))?;
            let fx = Fixture::new("history").await;
            let observer = Observer::new(Arc::new(writer), "amqp-w");
            let log = amqp::Log::default();
            let running = fx.start_observed(amqp::registry(log), 4, Some(observer));
            let ok = Envelope::new("mindora.echo", vec![json!(1)]);
            let flaky = Envelope::new("test.flaky", vec![json!("x")]);
            fx.publish_env(&ok).await;
            fx.publish_env(&flaky).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while fx.depth(&fx.dlq()).await < 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            running.stop().await;
            task.shutdown(Duration::from_secs(10)).await;
            fx.cleanup().await;
            anyhow::Ok((ok.id, flaky.id))
        })
        .and_then(|(ok, flaky)| {
            let rows = hist.wait_attempts(&ok, 1)?;
            ensure!(rows.len() == 1, "{rows:?}");
            let r = &rows[0];
            ensure!(r.source == "amqp" && r.status == "finished", "{r:?}");
            ensure!(
                r.function == "mindora.echo" && r.worker == "amqp-w",
                "{r:?}"
            );
            ensure!(r.queue.starts_with("t_history_"), "{r:?}");
            let rows = hist.wait_attempts(&flaky, 3)?;
            let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
            ensure!(statuses == ["retried", "retried", "failed"], "{statuses:?}");
            let attempts: Vec<i32> = rows.iter().map(|r| r.attempt).collect();
            ensure!(attempts == [1, 2, 3], "{attempts:?}");
            ensure!(
                rows.iter()
                    .all(|r| r.error_type.as_deref() == Some("ValueError")),
                "{rows:?}"
            );
            ensure!(
                rows[0].retry_at.is_some() && rows[2].retry_at.is_none(),
                "{rows:?}"
            );
            Ok(())
        })
}

/// A traced job (W3C context in `job.meta`, tracing on): its row's `trace_id` is the trace
/// the worker exported the attempt's span in.
#[test]
fn a_traced_attempt_has_its_trace_id() -> Result<()> {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let receiver = mindora_tests::otlp::OtlpReceiver::start()?;
    let rq = PythonRq::lease("3.0")?;
    let hist = HistoryDb::new("trace")?;
    let flags = hist.worker_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let endpoint = receiver.http_endpoint();
    let _worker = WorkerProcess::spawn(
        &rq.db.url(),
        "hist-trace",
        &flags,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )?;
    rq.enqueue(&format!(
        "q.enqueue(\"mindora.echo\", 1, job_id=\"traced\", \
         meta={{\"traceparent\": \"00-{TRACE}-00f067aa0ba902b7-01\"}})\n"
    ))?;
    wait_statuses(
        &rq.db,
        &ids(&["traced"]),
        &["finished"],
        Duration::from_secs(30),
    )?;
    let spans = receiver.wait_for(Duration::from_secs(30), "the attempt's span", |s| {
        s.iter()
            .any(|s| s.attr("messaging.message.id") == Some("traced"))
    })?;
    let exported = spans
        .iter()
        .find(|s| s.attr("messaging.message.id") == Some("traced"))
        .context("span")?;
    let rows = hist.wait_attempts("traced", 1)?;
    let stored: Option<String> = hist.rt.block_on(
        sqlx::query_scalar("SELECT trace_id FROM mindora_job_attempts WHERE job_id = 'traced'")
            .fetch_one(&hist.pool),
    )?;
    ensure!(rows.len() == 1, "{rows:?}");
    ensure!(
        stored.as_deref() == Some(exported.trace_id.as_str()) && exported.trace_id == TRACE,
        "stored {stored:?}, exported {}",
        exported.trace_id
    );
    Ok(())
}

/// A job that cannot be decoded and one naming no handler: each a `failed` row with the
/// reason, and the worker goes on.
#[test]
fn undecodable_and_unknown_jobs_have_failed_rows() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    let hist = HistoryDb::new("bad")?;
    let flags = hist.worker_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _worker = WorkerProcess::start(&rq.db, "hist-bad", &flags)?;
    rq.enqueue(
        "r.hset(\"rq:job:garbage\", mapping={\"data\": b\"\\x00not zlib\", \"status\": \"queued\", \"origin\": \"default\"})\n\
         r.rpush(\"rq:queue:default\", \"garbage\")\n\
         q.enqueue(\"no.such.function\", job_id=\"unknown\")\n",
    )?;
    wait_statuses(
        &rq.db,
        &ids(&["garbage", "unknown"]),
        &["failed"],
        Duration::from_secs(30),
    )?;
    let garbage = hist.wait_attempts("garbage", 1)?;
    let g = &garbage[0];
    ensure!(
        g.status == "failed" && g.function == "<undecodable>",
        "{g:?}"
    );
    ensure!(
        g.error_type.as_deref() == Some("DeserializationError"),
        "{g:?}"
    );
    let unknown = hist.wait_attempts("unknown", 1)?;
    let u = &unknown[0];
    ensure!(
        u.status == "failed" && u.function == "no.such.function",
        "{u:?}"
    );
    ensure!(
        u.error_message
            .as_deref()
            .is_some_and(|m| m.contains("no.such.function")),
        "{u:?}"
    );
    Ok(())
}
