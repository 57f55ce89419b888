//! Figures for issue 22 (printed, not asserted): history search over 1,000,000 attempts
//! (aim: p95 < 200 ms) and the Redis overview with 100,000 queued jobs in one queue (aim:
//! < 100 ms). `bash scripts/bench.sh --console` or
//! `cargo run --release -p mindora-console --example console_bench [-- --rows N --queued N]`.
//!
//! The history rows are generated in SQL (`generate_series`) in the schema
//! `console_bench` (kept between runs; regenerated when its row count differs), in day
//! partitions like the writer's; the Redis jobs in a leased test database.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use mindora_console::data::redis_view::{self, Registry};
use mindora_console::data::{Filter, History};
use mindora_sdk::wire::serializer::JobCall;
use mindora_sdk::wire::{keys, JobStatus, NewJob};
use sqlx::AssertSqlSafe;

const SCHEMA: &str = "console_bench";
const RUNS: usize = 40;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 and p95 of `RUNS` runs of `f(i)`, after one warm-up run.
async fn measure<F, Fut, T>(label: &str, mut f: F) -> Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    // One warm-up run (not counted): the first touch of an index after the data was
    // generated reads it from disk.
    f(RUNS).await?;
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = Instant::now();
        f(i).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "{label:<48} p50 {:>8.2} ms   p95 {:>8.2} ms",
        ms(pct(0.5)),
        ms(pct(0.95))
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn exec(h: &History, sql: String) -> Result<()> {
    sqlx::query(AssertSqlSafe(sql)).execute(h.pool()).await?;
    Ok(())
}

/// One million attempts over the last ~7 days: 50 functions, 5 queues, 20 workers, 90 %
/// finished, 7 % retried (then finished), 3 % failed, with varied error texts.
async fn generate(h: &History, rows: i64) -> Result<()> {
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM mindora_job_attempts")
        .fetch_one(h.pool())
        .await?;
    if have == rows {
        println!("history: {rows} rows already in schema {SCHEMA}");
        return Ok(());
    }
    let t = Instant::now();
    exec(h, "TRUNCATE mindora_job_attempts".into()).await?;
    let span_s = 7 * 86_400;
    for day in -1..=8 {
        exec(
            h,
            format!(
                "DO $$ DECLARE d date := current_date - {day}; BEGIN \
                 EXECUTE format('CREATE TABLE IF NOT EXISTS mindora_job_attempts_%s PARTITION OF \
                 mindora_job_attempts FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYYMMDD'), d, d + 1); END $$"
            ),
        )
        .await?;
    }
    exec(
        h,
        format!(
            "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
             status, worker, enqueued_at, started_at, wait_ms, run_ms, error_type, error_message, \
             args_summary) \
             SELECT e, 'job-' || (i / 2), CASE WHEN i % 10 = 0 THEN 'amqp' ELSE 'redis' END, \
               'queue_' || (i % 5), 'app.tasks.task_' || (i % 50), 1 + (i % 2), st, \
               'worker-' || (i % 20), e - make_interval(secs => (i % 900) / 10.0 + 0.2), \
               e - make_interval(secs => (i % 900) / 10.0), 200, (i % 900) * 100, \
               CASE WHEN st = 'finished' THEN NULL \
                    WHEN i % 3 = 0 THEN 'ConnectionError' WHEN i % 3 = 1 THEN 'ValueError' \
                    ELSE 'KeyError' END, \
               CASE WHEN st = 'finished' THEN NULL \
                    WHEN i % 3 = 0 THEN 'timeout after ' || (i % 97) || 's talking to db-' || (i % 13) \
                    WHEN i % 3 = 1 THEN 'document ' || i || ' is not valid: page ' || (i % 400) \
                    ELSE 'missing key ' || md5(i::text) END, \
               '(' || i || ', ''doc'')' \
             FROM (SELECT i, now() - make_interval(secs => i * {span_s}.0 / {rows}) AS e, \
                     CASE WHEN i % 100 < 90 THEN 'finished' WHEN i % 100 < 97 THEN 'retried' \
                          ELSE 'failed' END AS st \
                   FROM generate_series(1, {rows}) i) g"
        ),
    )
    .await?;
    exec(h, "VACUUM ANALYZE mindora_job_attempts".into()).await?;
    println!(
        "history: generated {rows} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn explain(h: &History, label: &str, sql: &str) -> Result<()> {
    let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(h.pool())
        .await?;
    let uses: Vec<&str> = plan
        .iter()
        .filter_map(|l| {
            // "Index Scan using <index> on ..." / "Bitmap Index Scan on <index>"
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "using").or_else(|| {
                words
                    .windows(3)
                    .position(|w| w == ["Index", "Scan", "on"])
                    .map(|i| i + 2)
            })?;
            words.get(at + 1).copied()
        })
        .collect();
    println!("  plan of {label}: indexes {uses:?}");
    Ok(())
}

async fn history_figures(rows: i64) -> Result<()> {
    let h = History::connect(&mindora_tests::postgres_url(), SCHEMA)?;
    h.migrate().await.context("PostgreSQL at 127.0.0.1:5432")?;
    generate(&h, rows).await?;
    let day = Utc::now() - chrono::Duration::hours(24);
    measure("search function + last 24 h (50 rows)", |i| {
        let h = h.clone();
        async move {
            let f = Filter {
                function: Some(format!("app.tasks.task_{}", i % 50)),
                from: Some(day),
                ..Default::default()
            };
            Ok(h.search(&f, 50, None).await?)
        }
    })
    .await?;
    measure("search function, page 5 by keyset", |i| {
        let h = h.clone();
        async move {
            let f = Filter {
                function: Some(format!("app.tasks.task_{}", i % 50)),
                ..Default::default()
            };
            let mut before = None;
            let mut page = Vec::new();
            for _ in 0..5 {
                page = h.search(&f, 50, before.clone()).await?;
                before = page.last().map(|r| (r.ended_at, r.job_id.clone()));
            }
            Ok(page)
        }
    })
    .await?;
    measure("search error text (ILIKE, trigram)", |i| {
        let h = h.clone();
        async move {
            let needles = [
                "timeout after 4",
                "talking to db-1",
                "document 12345",
                "is not valid",
            ];
            let f = Filter {
                error: Some(needles[i % needles.len()].to_string()),
                ..Default::default()
            };
            Ok(h.search(&f, 50, None).await?)
        }
    })
    .await?;
    measure("search status failed", |i| {
        let h = h.clone();
        async move {
            let statuses = ["failed", "retried"];
            let f = Filter {
                status: Some(statuses[i % 2].into()),
                ..Default::default()
            };
            Ok(h.search(&f, 50, None).await?)
        }
    })
    .await?;
    measure("search by job id", |i| {
        let h = h.clone();
        async move {
            let f = Filter {
                id: Some(format!("job-{}", i * 9_973 % 500_000)),
                ..Default::default()
            };
            Ok(h.search(&f, 50, None).await?)
        }
    })
    .await?;
    measure("timeline of one job", |i| {
        let h = h.clone();
        async move { Ok(h.timeline(&format!("job-{}", i * 7_919 % 500_000)).await?) }
    })
    .await?;
    measure("count function + last 24 h", |i| {
        let h = h.clone();
        async move {
            let f = Filter {
                function: Some(format!("app.tasks.task_{}", i % 50)),
                from: Some(day),
                ..Default::default()
            };
            Ok(h.count(&f).await?)
        }
    })
    .await?;
    measure("error groups, last 24 h", |_| {
        let h = h.clone();
        async move {
            let f = Filter {
                from: Some(day),
                ..Default::default()
            };
            Ok(h.error_groups(&f, 20).await?)
        }
    })
    .await?;
    measure("hourly stats, last 72 h (closed hours kept)", |_| {
        let h = h.clone();
        async move { Ok(h.hourly(Utc::now() - chrono::Duration::hours(72)).await?) }
    })
    .await?;
    let t = Instant::now();
    History::connect(&mindora_tests::postgres_url(), SCHEMA)?
        .hourly(Utc::now() - chrono::Duration::hours(72))
        .await?;
    println!(
        "{:<48} {:>8.2} ms",
        "hourly stats, 72 h, first call, no warm-up",
        ms(t.elapsed())
    );
    // As the console starts: warm() at start, the first overview right after.
    let fresh = History::connect(&mindora_tests::postgres_url(), SCHEMA)?;
    let t = Instant::now();
    let warm = fresh.warm();
    let first = fresh
        .hourly(Utc::now() - chrono::Duration::hours(72))
        .await?;
    let first_ms = ms(t.elapsed());
    let hours_then = first
        .iter()
        .map(|s| s.hour)
        .collect::<std::collections::HashSet<_>>()
        .len();
    println!(
        "{:<48} {:>8.2} ms   ({hours_then} hours with rows)",
        "hourly stats, 72 h, first call during warm-up", first_ms
    );
    warm.await?;
    println!(
        "{:<48} {:>8.2} ms",
        "warm-up of the closed hours, total",
        ms(t.elapsed())
    );
    explain(
        &h,
        "function + 24 h",
        &format!(
            "SELECT * FROM mindora_job_attempts WHERE function = 'app.tasks.task_7' \
             AND ended_at >= '{}' ORDER BY ended_at DESC, job_id DESC LIMIT 50",
            day.to_rfc3339()
        ),
    )
    .await?;
    explain(
        &h,
        "error text",
        "SELECT * FROM mindora_job_attempts WHERE error_message ILIKE '%document 12345%' \
         ORDER BY ended_at DESC, job_id DESC LIMIT 50",
    )
    .await?;
    explain(
        &h,
        "job id",
        "SELECT * FROM mindora_job_attempts WHERE job_id = 'job-17' ORDER BY ended_at DESC, job_id DESC LIMIT 50",
    )
    .await?;
    Ok(())
}

async fn redis_figures(queued: u64) -> Result<()> {
    let db = mindora_tests::RedisDb::lease()?;
    let conn = db.sdk_conn().await?;
    let mut c = conn.clone();
    let t = Instant::now();
    let now = Utc::now();
    let template = NewJob::new(
        "bench",
        JobCall {
            function: "app.tasks.process_document".into(),
            args: vec![serde_json::json!(4711), serde_json::json!("doc.pdf")],
            kwargs: Default::default(),
        },
    );
    let fields = template.fields(JobStatus::Queued, now)?;
    let mut n = 0;
    while n < queued {
        let mut pipe = redis::pipe();
        for _ in 0..1000.min(queued - n) {
            let id = format!("bench-{n}");
            pipe.hset_multiple(keys::job(&id), &fields).ignore();
            pipe.rpush(keys::queue("bench"), &id).ignore();
            n += 1;
        }
        pipe.query_async::<()>(&mut c).await?;
    }
    let mut pipe = redis::pipe();
    pipe.sadd(keys::queues(), keys::queue("bench")).ignore();
    for q in 0..20 {
        let name = format!("other_{q}");
        pipe.sadd(keys::queues(), keys::queue(&name)).ignore();
        pipe.rpush(keys::queue(&name), "x").ignore();
        pipe.zadd(keys::failed(&name), "y", 1).ignore();
    }
    for w in 0..10 {
        let name = format!("bench-worker-{w}");
        pipe.sadd(keys::workers(), keys::worker(&name)).ignore();
        pipe.hset_multiple(
            keys::worker(&name),
            &[
                ("state", "busy"),
                ("queues", "bench"),
                ("version", "2.12.0"),
            ],
        )
        .ignore();
    }
    pipe.query_async::<()>(&mut c).await?;
    println!(
        "redis: {queued} queued jobs written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    measure(
        &format!("overview ({queued} queued, 21 queues, 10 workers)"),
        |_| {
            let conn = conn.clone();
            async move { Ok(redis_view::overview(&conn).await?) }
        },
    )
    .await?;
    measure("queue page 1 (50 jobs)", |_| {
        let conn = conn.clone();
        async move { Ok(redis_view::queue_jobs(&conn, "bench", Registry::Queued, 0, 50).await?) }
    })
    .await?;
    measure("queue page at offset 50,000", |_| {
        let conn = conn.clone();
        async move {
            Ok(redis_view::queue_jobs(&conn, "bench", Registry::Queued, 50_000, 50).await?)
        }
    })
    .await?;
    measure("job page", |i| {
        let conn = conn.clone();
        async move {
            let id = format!("bench-{}", (i as u64 * 997) % queued.max(1));
            Ok(redis_view::job(&conn, &id).await?)
        }
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let rows = arg("--rows", 1_000_000) as i64;
    let queued = arg("--queued", 100_000);
    println!(
        "console figures ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    redis_figures(queued).await?;
    history_figures(rows).await?;
    Ok(())
}
