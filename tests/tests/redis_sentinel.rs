//! Redis Sentinel failover under load: a private master, a replica and two Sentinels on
//! loopback (the shared Redis is untouched). A worker found the master through the
//! Sentinels and runs 2 000 jobs; midway the master is failed over (`SENTINEL FAILOVER`).
//! The worker follows the new master and every job finishes there: none lost, none stuck.
//! Writes the old master took after the promotion are lost (asynchronous replication), so
//! jobs may run twice: at-least-once, as after a Redis restart. Prints how long the
//! promotion and the worker's resumption took.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use mindora_sdk::Client;
use mindora_tests::servers::{
    enqueue_failover_jobs, free_port, spawn_worker, SentinelGroup, FAILOVER_WORKER_FLAGS,
};
use mindora_tests::wait_for;

const MASTER: &str = "mindora-main";
const JOBS: usize = 2000;

fn conn(port: u16) -> Result<redis::Connection> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?.get_connection()?)
}

fn role(port: u16) -> Option<String> {
    let mut c = conn(port).ok()?;
    let v: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
    v.first()
        .and_then(|r| redis::from_redis_value_ref::<String>(r).ok())
}

fn count(c: &mut redis::Connection, cmd: &str, key: &str) -> Result<i64> {
    Ok(redis::cmd(cmd).arg(key).query(c)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_follows_a_sentinel_failover_and_loses_no_job() -> Result<()> {
    let group = SentinelGroup::start(MASTER)?;
    let (m_port, r_port, [s1, s2]) = (group.master, group.replica, group.sentinels);
    let dead = free_port()?;
    // The first Sentinel listed is down: the others are asked in turn.
    let url = format!("redis+sentinel://127.0.0.1:{dead},127.0.0.1:{s1},127.0.0.1:{s2}/{MASTER}/0");

    let client = Client::connect(&url).await?;
    let ids = enqueue_failover_jobs(&client, JOBS, 0.02).await?;
    let mut worker = spawn_worker(&url, "w-sentinel", &FAILOVER_WORKER_FLAGS)?;

    // Sentinel must know a healthy replica before it can fail over.
    group.wait_replica_seen()?;
    let mut m = conn(m_port)?;
    wait_for(Duration::from_secs(30), "the worker to be midway", || {
        Ok((count(&mut m, "ZCARD", "rq:finished:default")? >= 200).then_some(()))
    })?;
    let before = count(&mut m, "ZCARD", "rq:finished:default")?;

    let failover_sent = group.failover()?;
    // Promotion: the replica reports role master. Resumption: jobs finish on it.
    let mut promoted = None;
    let mut base = 0;
    let resumed = loop {
        if failover_sent.elapsed() > Duration::from_secs(60) {
            bail!("the worker did not resume on the new master within 60 s");
        }
        if promoted.is_none() && role(r_port).as_deref() == Some("master") {
            promoted = Some(failover_sent.elapsed());
            base = count(&mut conn(r_port)?, "ZCARD", "rq:finished:default")?;
        }
        if promoted.is_some() && count(&mut conn(r_port)?, "ZCARD", "rq:finished:default")? > base {
            break failover_sent.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let promoted = promoted.context("promotion time")?;

    let mut n = conn(r_port)?;
    let drained = wait_for(
        Duration::from_secs(120),
        "every job finished on the new master",
        || {
            let finished = count(&mut n, "ZCARD", "rq:finished:default")?;
            let queued = count(&mut n, "LLEN", "rq:queue:default")?;
            let started = count(&mut n, "ZCARD", "rq:wip:default")?;
            let scheduled = count(&mut n, "ZCARD", "rq:scheduled:default")?;
            Ok(
                (finished == JOBS as i64 && queued == 0 && started == 0 && scheduled == 0)
                    .then(|| failover_sent.elapsed()),
            )
        },
    )?;
    // Every job, one by one: finished, with its result, and nothing failed.
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(format!("rq:job:{id}"), "status");
    }
    let statuses: Vec<Option<String>> = pipe.query(&mut n)?;
    let unfinished: Vec<_> = ids
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| s.as_deref() != Some("finished"))
        .collect();
    assert!(
        unfinished.is_empty(),
        "not finished: {:?}",
        &unfinished[..unfinished.len().min(5)]
    );
    assert_eq!(
        count(&mut n, "ZCARD", "rq:failed:default")?,
        0,
        "no job failed"
    );
    // The worker is registered on the new master and still heartbeating there.
    let key = format!("rq:worker:{}", worker.name);
    let hb1: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("last_heartbeat")
        .query(&mut n)?;
    std::thread::sleep(Duration::from_millis(2200));
    let hb2: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("last_heartbeat")
        .query(&mut n)?;
    assert!(
        hb2.is_some() && hb1 != hb2,
        "worker heartbeats on the new master ({hb1:?} -> {hb2:?})"
    );
    assert!(worker.alive(), "the worker survived the failover");
    eprintln!(
        "FIGURES sentinel-failover: {JOBS} jobs, {before} done before SENTINEL FAILOVER; \
         replica promoted after {:.2} s; worker finishing jobs on the new master after {:.2} s; \
         all {JOBS} finished {:.1} s after the failover",
        promoted.as_secs_f64(),
        resumed.as_secs_f64(),
        drained.as_secs_f64()
    );
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    Ok(())
}
