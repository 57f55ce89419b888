//! A Sentinel failover with the worker's DEFAULT flags (no shorter heartbeat, recovery or
//! abandon grace): a private master, a replica and two Sentinels on loopback (the shared
//! Redis is untouched), 600 jobs, `SENTINEL FAILOVER` midway.
//!
//! The worker hears the failover start on the Sentinels' pub/sub and holds its commands, so
//! the old master takes no claim or outcome the promoted replica will lack; it moves to the
//! promoted replica, and reconciles: executions of its own the new master lists but it does
//! not run go back to their queue at once. So every job finishes within seconds of the
//! command (not after rq's TTL rule), and no more jobs run twice than were in flight.
//! Prints the figures for `docs/scaling.md`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_sdk::Client;
use mindora_tests::servers::{enqueue_failover_jobs, free_port, SentinelGroup};
use mindora_tests::{http_get, wait_for, worker_binary, WorkerProcess};

const MASTER: &str = "mindora-default-flags";
const JOBS: usize = 600;
const CONCURRENCY: usize = 8;

fn conn(port: u16) -> Result<redis::Connection> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?.get_connection()?)
}

fn count(c: &mut redis::Connection, cmd: &str, key: &str) -> Result<i64> {
    Ok(redis::cmd(cmd).arg(key).query(c)?)
}

/// Sum of a counter's series in a Prometheus text scrape.
fn counter_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_with_default_flags_finishes_every_job_within_seconds() -> Result<()> {
    failover_run(true).await
}

/// The leading Sentinel announces an address nobody listens on, so the worker hears no
/// `+try-failover` (each Sentinel publishes its own events): the old master takes its
/// writes until the switch, and reconciliation recovers the executions that were lost.
#[tokio::test(flavor = "multi_thread")]
async fn failover_unheard_is_reconciled_within_seconds() -> Result<()> {
    failover_run(false).await
}

/// One failover run. The worker's URL lists only the Sentinel that does not lead the
/// failover; it finds the leader through it (`SENTINEL SENTINELS`) when `hears_leader`.
async fn failover_run(hears_leader: bool) -> Result<()> {
    let group = SentinelGroup::start(MASTER)?;
    let (m_port, r_port, [s1, s2]) = (group.master, group.replica, group.sentinels);
    let metrics = free_port()?;
    let url = format!("redis+sentinel://127.0.0.1:{s2}/{MASTER}/0");
    if !hears_leader {
        let dead = free_port()?;
        redis::cmd("SENTINEL")
            .arg("CONFIG")
            .arg("SET")
            .arg("announce-port")
            .arg(dead)
            .exec(&mut conn(s1)?)?;
        wait_for(
            Duration::from_secs(30),
            "the leader's new address to spread",
            || {
                let others: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER)
                    .query(&mut conn(s2)?)?;
                Ok(others
                    .iter()
                    .any(|o| o.get("port") == Some(&dead.to_string()))
                    .then_some(()))
            },
        )?;
    }

    group.wait_replica_seen()?;
    let client = Client::connect(&url).await?;
    let ids = enqueue_failover_jobs(&client, JOBS, 0.1).await?;
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let concurrency = CONCURRENCY.to_string();
    // The worker's log, to show what it did in the switch.
    let log = group.dir().join("worker.log");
    let mut worker = WorkerProcess {
        child: Command::new(worker_binary()?)
            .args(["--redis-url", &url, "--name", "w-failover-default"])
            .args([
                "--concurrency",
                &concurrency,
                "--metrics-addr",
                &metrics_addr,
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&log)?)
            .spawn()?,
        name: "w-failover-default".into(),
    };

    let before = wait_for(
        Duration::from_secs(60),
        "the worker to be a quarter through",
        || {
            let done = count(&mut conn(m_port)?, "ZCARD", "rq:finished:default")?;
            Ok((done >= (JOBS / 4) as i64).then_some(done))
        },
    )?;

    let sent = group.failover()?;
    // A hang bound, not a performance one: on a worker without reconciliation the jobs
    // lost in the switch wait ~95 s for rq's TTL rule. Servers drop their clients when
    // their role changes: a new connection each time.
    let drained = wait_for(
        Duration::from_secs(60),
        "every job finished on the new master",
        || {
            let read = || -> Result<(i64, i64, i64)> {
                let mut n = conn(r_port)?;
                Ok((
                    count(&mut n, "ZCARD", "rq:finished:default")?,
                    count(&mut n, "LLEN", "rq:queue:default")?,
                    count(&mut n, "ZCARD", "rq:wip:default")?,
                ))
            };
            Ok(match read() {
                Ok((finished, 0, 0)) if finished == JOBS as i64 => Some(sent.elapsed()),
                _ => None,
            })
        },
    )?;
    let mut n = conn(r_port)?;
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(format!("rq:job:{id}"), "status");
    }
    let statuses: Vec<Option<String>> = pipe.query(&mut n)?;
    let unfinished = statuses
        .iter()
        .filter(|s| s.as_deref() != Some("finished"))
        .count();
    assert_eq!(unfinished, 0, "jobs not finished");
    assert_eq!(
        count(&mut n, "ZCARD", "rq:failed:default")?,
        0,
        "no job failed"
    );

    // The blocking HTTP client must not run on the runtime's own threads.
    let scrape = tokio::task::block_in_place(|| http_get(metrics, "/metrics"))
        .context("scraping the worker")?;
    let started = counter_sum(&scrape, "mindora_jobs_started_total");
    let twice = started - JOBS as f64;
    eprintln!(
        "FIGURES failover-default-flags (worker hears the leading Sentinel: {hears_leader}): {JOBS} jobs of 0.1 s, --concurrency {CONCURRENCY}, \
         default heartbeat/recovery/grace; {before} done before SENTINEL FAILOVER; all finished \
         {:.1} s after the command; {twice} jobs ran twice (at most {CONCURRENCY} in flight)",
        drained.as_secs_f64()
    );
    let logged = std::fs::read_to_string(&log)?;
    for line in logged.lines().filter(|l| {
        l.contains("failover") || l.contains("master moved") || l.contains("reconciled")
    }) {
        eprintln!("worker: {line}");
    }
    assert!(
        !hears_leader || twice <= CONCURRENCY as f64,
        "{twice} jobs ran twice, more than the {CONCURRENCY} in flight"
    );
    assert!(worker.alive(), "the worker survived the failover");
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    Ok(())
}
