//! Fleets that mix workers: Python rq 3.0 workers and ours sharing one `RateLimit`, and
//! several replicas running the same cron schedule.

use std::collections::{BTreeSet, HashSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use mindora_tests::{
    python_command, repo_root, run_python, wait_for, wait_statuses, RedisDb, WorkerProcess,
    RQ_VERSIONS,
};
use redis::Commands;

/// A Python rq worker process, killed on drop.
struct PyWorker(Child);

impl Drop for PyWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn py_worker(db: &RedisDb, name: &str, queue: &str) -> Result<PyWorker> {
    let root = repo_root();
    let path = format!(
        "{}:{}",
        root.join("tests/python").display(),
        root.join("tests/bench").display()
    );
    let code = format!(
        "import os, redis\nfrom rq import Queue, Worker\nr = redis.Redis.from_url(os.environ['REDIS_URL'])\n\
         Worker([Queue('{queue}', connection=r)], connection=r, name='{name}').work(logging_level='WARNING')\n"
    );
    let child = python_command("3.0", db)?
        .env("PYTHONPATH", path)
        .arg("-c")
        .arg(code)
        .stdout(Stdio::null())
        .spawn()
        .context("starting a Python rq worker")?;
    Ok(PyWorker(child))
}

#[test]
fn rq30_rate_limit_holds_across_python_and_rust_workers() -> Result<()> {
    let db = RedisDb::lease()?;
    let n = 200;
    run_python(
        "3.0",
        &db,
        &format!(
            r#"
from rq import RateLimit
q = Queue("rl", connection=r)
for i in range({n}):
    q.enqueue("mindora.sleep", 0.03, job_id=f"rl-{{i}}", rate_limit=RateLimit("shared-key", 2))
"#
        ),
    )?;
    let _py = [py_worker(&db, "py-1", "rl")?, py_worker(&db, "py-2", "rl")?];
    let mut conn = db.conn()?;
    // Both kinds of worker compete from the start.
    wait_for(
        Duration::from_secs(60),
        "the Python workers to register",
        || {
            let n: usize = conn.scard("rq:workers")?;
            Ok((n >= 2).then_some(()))
        },
    )?;
    // Ours could run 8 at once each: only the limit keeps them to 2.
    let ours = [
        WorkerProcess::start(&db, "rs-1", &["--queues", "rl", "--concurrency", "8"])?,
        WorkerProcess::start(&db, "rs-2", &["--queues", "rl", "--concurrency", "8"])?,
    ];
    let ids: Vec<String> = (0..n).map(|i| format!("rl-{i}")).collect();
    let (mut samples, mut max_running, mut max_allowed) = (0u64, 0usize, 0usize);
    let started = Instant::now();
    loop {
        let wip: Vec<String> = conn.zrange("rq:wip:rl", 0, -1)?;
        let running: HashSet<&str> = wip
            .iter()
            .map(|m| m.rsplit_once(':').map_or(m.as_str(), |(j, _)| j))
            .collect();
        let allowed: usize = conn.zcard("rq:rl:shared-key:allowed")?;
        max_running = max_running.max(running.len());
        max_allowed = max_allowed.max(allowed);
        samples += 1;
        let finished: usize = conn.zcard("rq:finished:rl")?;
        if finished == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(150) {
            bail!("only {finished} of {n} finished (max running {max_running})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_statuses(&db, &ids, &["finished"], Duration::from_secs(10))?;
    eprintln!(
        "rate limit 2: {n} jobs in {:.1}s, {samples} samples, max running {max_running}, max slots {max_allowed}",
        started.elapsed().as_secs_f64()
    );
    assert!(max_running <= 2, "{max_running} ran at once");
    assert!(max_allowed <= 2, "{max_allowed} slots held");
    for id in &ids {
        let runs: i64 = redis::cmd("XLEN")
            .arg(format!("rq:results:{id}"))
            .query(&mut conn)?;
        assert_eq!(runs, 1, "{id} ran {runs} times");
    }
    let mut per_worker = Vec::new();
    for w in ["py-1", "py-2", "rs-1", "rs-2"] {
        let c: Option<i64> = conn.hget(format!("rq:worker:{w}"), "successful_job_count")?;
        per_worker.push((w, c.unwrap_or(0)));
    }
    eprintln!("jobs per worker: {per_worker:?}");
    let rust: i64 = per_worker[2..].iter().map(|(_, c)| c).sum();
    assert!(rust > 0 && rust < n as i64, "{per_worker:?}");
    let waiting: usize = conn.zcard("rq:rl:shared-key:rate_limited")?;
    assert_eq!(waiting, 0);
    drop(ours);
    Ok(())
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Three replicas run one schedule; one is killed and restarted midway. Every tick in the
/// window is enqueued exactly once and none is missing. `MINDORA_CRON_TEST_SECS` (default
/// 40) and `MINDORA_CRON_TEST_TICK_SECS` (default 1) set the length and the tick.
#[test]
fn cron_on_three_replicas_enqueues_every_tick_exactly_once() -> Result<()> {
    let secs = env_secs("MINDORA_CRON_TEST_SECS", 40);
    let tick = env_secs("MINDORA_CRON_TEST_TICK_SECS", 1).clamp(1, 59) as i64;
    let db = RedisDb::lease()?;
    let dir = std::env::temp_dir().join(format!("mindora-cron-{}-{}", std::process::id(), db.db));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("cron.toml");
    std::fs::write(
        &file,
        format!(
            "timezone = \"Europe/Berlin\"\n[[job]]\nname = \"beat\"\ncron = \"*/{tick} * * * * *\"\n\
             queue = \"cronq\"\nfunc = \"mindora.echo\"\nargs = [1]\nkwargs = {{ tag = \"cron\" }}\n\
             timeout = 30\nresult_ttl = 3600\n"
        ),
    )?;
    let f = file.display().to_string();
    let args = [
        "--queues",
        "cronq",
        "--concurrency",
        "4",
        "--cron",
        f.as_str(),
    ];
    let spawned = epoch();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut with_metrics = args.to_vec();
    with_metrics.extend(["--metrics-addr", metrics_addr.as_str()]);
    let mut replicas = vec![
        WorkerProcess::start(&db, "cron-a", &with_metrics)?,
        WorkerProcess::start(&db, "cron-b", &args)?,
        WorkerProcess::start(&db, "cron-c", &args)?,
    ];
    let mut conn = db.conn()?;
    // A replica registers in rq's registry as its schedule starts.
    wait_for(
        Duration::from_secs(60),
        "three schedulers to register",
        || {
            let n: usize = conn.zcard("rq:cron_schedulers")?;
            Ok((n >= 3).then_some(()))
        },
    )?;
    let first = epoch();
    std::thread::sleep(Duration::from_secs(secs / 2));
    replicas[1].signal("KILL")?;
    replicas[1].wait_exit(Duration::from_secs(10))?;
    replicas[1] = WorkerProcess::start(&db, "cron-b2", &args)?;
    std::thread::sleep(Duration::from_secs(secs - secs / 2));
    // Every live replica's entry is current (rq saves after each enqueue and heartbeats
    // every loop): its last enqueue is at most a tick and 3 s old, its next one not in the
    // past. (The killed cron-b stays listed, frozen, until rq's 120 s TTL drops it.)
    let fresh = format!(
        r#"
from datetime import datetime, timedelta, timezone
from rq.cron import CronScheduler
def utc(t):
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t
now = datetime.now(timezone.utc)
names = sorted(s.name for s in CronScheduler.all(r))
jobs = [(s.name, j) for s in CronScheduler.all(r) for j in s.get_jobs()]
assert all(j.name == "beat" and j.queue_name == "cronq" and j.next_enqueue_time for _, j in jobs), jobs
stale = [(n, j.latest_enqueue_time, j.next_enqueue_time) for n, j in jobs
         if n != "cron-b" and (j.latest_enqueue_time is None
         or now - utc(j.latest_enqueue_time) > timedelta(seconds={tick} + 3)
         or utc(j.next_enqueue_time) < now - timedelta(seconds=3))]
assert not stale, (now, stale)
print(",".join(names))
"#
    );
    for version in RQ_VERSIONS {
        let out = run_python(version, &db, &fresh)?;
        assert!(
            out.contains("cron-a") && out.contains("cron-b2") && out.contains("cron-c"),
            "rq {version}: {out}"
        );
    }
    let metrics = mindora_tests::http_get(port, "/metrics")?;
    for name in [
        "enqueued_total",
        "next_run_timestamp_seconds",
        "last_run_timestamp_seconds",
    ] {
        let series = format!("mindora_cron_{name}{{entry=\"beat\"}}");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    let last = epoch();
    // Ticks up to `last` must all be in; the replicas get two more seconds for them.
    std::thread::sleep(Duration::from_secs(2));
    for r in &replicas {
        r.signal("TERM")?;
    }
    for r in &mut replicas {
        r.wait_exit(Duration::from_secs(30))?;
    }
    let keys: Vec<String> = conn.keys("mindora:cron:beat:*")?;
    let mut ticks = BTreeSet::new();
    let mut jobs = HashSet::new();
    for k in &keys {
        let t: i64 = k
            .rsplit(':')
            .next()
            .and_then(|t| t.parse().ok())
            .context("tick key")?;
        ticks.insert(t);
        let id: String = conn.get(k)?;
        if !jobs.insert(id.clone()) {
            bail!("job {id} claimed for two ticks");
        }
    }
    let history: Vec<String> = conn.zrange("rq:cron_job:beat:jobs", 0, -1)?;
    assert_eq!(history.len(), ticks.len(), "one job per tick");
    assert_eq!(history.iter().cloned().collect::<HashSet<_>>(), jobs);
    let expected: BTreeSet<i64> = (first + 1..=last).filter(|t| t % tick == 0).collect();
    let missing: Vec<&i64> = expected.difference(&ticks).collect();
    assert!(missing.is_empty(), "ticks never enqueued: {missing:?}");
    assert!(ticks
        .iter()
        .all(|t| t % tick == 0 && *t >= spawned && *t <= last + 10));
    eprintln!(
        "cron: {} ticks of {tick}s over {}s on 3 replicas (one killed and restarted), each enqueued once",
        ticks.len(),
        last - first
    );
    // The jobs are plain rq jobs the replicas ran once (the last tick's may still wait).
    for id in &history {
        let st: Option<String> = conn.hget(format!("rq:job:{id}"), "status")?;
        let runs: i64 = redis::cmd("XLEN")
            .arg(format!("rq:results:{id}"))
            .query(&mut conn)?;
        let ok = matches!(
            (st.as_deref(), runs),
            (Some("finished"), 1) | (Some("queued"), 0)
        );
        assert!(ok, "{id}: {st:?}, {runs} runs");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// rq 3.0 releases a slot on final failure and on a retry through the scheduled registry
/// (not on an immediate retry); waiting jobs show `rate_limited` to Python. With one slot,
/// a release that never came would strand every later job.
#[test]
fn rq30_rate_limit_slot_is_released_on_failure_and_delayed_retry() -> Result<()> {
    let db = RedisDb::lease()?;
    let out = run_python(
        "3.0",
        &db,
        r#"
from rq import RateLimit, Retry
from rq.job import Job
q = Queue("rl1", connection=r)
one = RateLimit("one-slot", 1)
q.enqueue("mindora.fail", "retried later", job_id="retry-later", retry=Retry(max=1, interval=2), rate_limit=one)
q.enqueue("mindora.echo", 1, job_id="ok-1", rate_limit=one)
q.enqueue("mindora.fail", "final", job_id="fails", rate_limit=one)
q.enqueue("mindora.fail", "again", job_id="retry-now", retry=Retry(max=1), rate_limit=one)
q.enqueue("mindora.echo", 2, job_id="ok-2", rate_limit=one)
print(",".join(Job.fetch(j, connection=r).get_status() for j in ("retry-later", "ok-1", "ok-2")))
"#,
    )?;
    assert_eq!(out.trim(), "queued,rate_limited,rate_limited");
    // No maintenance pass after start-up: it would free a leaked slot and hide a missing release.
    let args = [
        "--queues",
        "rl1",
        "--concurrency",
        "4",
        "--recover-every-secs",
        "3600",
    ];
    let _w = WorkerProcess::start(&db, "rs-rl1", &args)?;
    let t = Duration::from_secs(30);
    wait_statuses(
        &db,
        &[String::from("ok-1"), String::from("ok-2")],
        &["finished"],
        t,
    )?;
    let failed = ["retry-later", "fails", "retry-now"].map(String::from);
    wait_statuses(&db, &failed, &["failed"], t)?;
    let out = run_python(
        "3.0",
        &db,
        r#"
from rq.rate_limit import RateLimitRegistry
reg = RateLimitRegistry("one-slot", connection=r)
print(reg.get_allowed_job_count(), reg.get_rate_limited_job_count())
"#,
    )?;
    assert_eq!(out.trim(), "0 0", "slots or waiting jobs left over");
    Ok(())
}
