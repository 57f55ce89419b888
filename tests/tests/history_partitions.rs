//! Partition maintenance next to readers, on real PostgreSQL: a worker making its day
//! partitions (moving rows out of DEFAULT, then creating the next days) while the console
//! reads the history must not deadlock (`40P01`) either side. Before the fix the writer
//! locked DEFAULT, then the parent, the reverse of a reader's order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};
use chrono::Utc;
use mindora_history::{partitions, schema, HistoryConfig};

fn pg_url() -> String {
    std::env::var("MINDORA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn making_partitions_does_not_deadlock_with_readers() -> Result<()> {
    let name = format!(
        "hist_pdl_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut config = HistoryConfig::new(pg_url(), "pdl");
    config.schema = name.clone();
    let pool = schema::pool(&config)?;
    schema::migrate(&pool, &name).await?;
    let today = Utc::now().date_naive();
    let mut failures = Vec::new();
    for _round in 0..15 {
        // Rows of yesterday and today in DEFAULT, no day partition: a fresh worker's start.
        for (name, _) in partitions::day_partitions(&mut *pool.acquire().await?).await? {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE \"{name}\"")))
                .execute(&pool)
                .await?;
        }
        sqlx::query(
            "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
             status, worker, started_at, run_ms) SELECT now() - make_interval(hours => h), 'j' || h, \
             'redis', 'q', 'f', 1, 'finished', 'w', now() - make_interval(hours => h), 1 \
             FROM generate_series(0, 30) h",
        )
        .execute(&pool)
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = sqlx::query_scalar::<_, i64>(
                            "SELECT count(*) FROM mindora_job_attempts WHERE ended_at > now() - interval '3 days'",
                        )
                        .fetch_one(&pool)
                        .await
                        {
                            errors.push(e.to_string());
                        }
                    }
                    errors
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Err(e) = partitions::maintain_on(&pool, today, 0).await {
            failures.push(format!("maintenance: {e}"));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            failures.extend(r.await?.into_iter().map(|e| format!("reader: {e}")));
        }
    }
    let created = partitions::day_partitions(&mut *pool.acquire().await?).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{name}\" CASCADE"
    )))
    .execute(&pool)
    .await?;
    ensure!(failures.is_empty(), "{failures:#?}");
    ensure!(created.len() == 4 && created[1].1 == today, "{created:?}");
    Ok(())
}
