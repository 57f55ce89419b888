//! Crash recovery in seconds with a liveness lease, and fencing of late outcomes:
//! a kill -9ed worker's jobs run again within 15 s (default lease), a paused worker's late
//! outcome never overwrites the newer execution, and a Python rq worker's long job (no
//! lease) is never taken early.

use std::time::{Duration, Instant};

use anyhow::Result;
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{
    assert_each_ran_once, free_port, http_get, python_command, status, wait_for, wait_statuses,
    WorkerProcess,
};
use redis::Commands;

fn worker_of(conn: &mut redis::Connection, id: &str) -> Result<Option<String>> {
    Ok(conn.hget(format!("rq:job:{id}"), "worker_name")?)
}

#[test]
fn kill_9_with_50_jobs_in_flight_reruns_them_within_the_lease() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
from rq import Retry
for i in range(50):
    q.enqueue("mindora.sleep", 4, job_id=f"k{i}", retry=Retry(max=1), job_timeout=60)
"#,
    )?;
    let ids: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    // Default lease and rq's default abandon grace: only the lease can bring them back fast.
    let mut victim = WorkerProcess::start(&rq.db, "w-lease-victim", &["--concurrency", "50"])?;
    wait_statuses(&rq.db, &ids, &["started"], Duration::from_secs(20))?;
    let survivor = WorkerProcess::start(&rq.db, "w-lease-survivor", &["--concurrency", "50"])?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(10), "survivor registered", || {
        let n: i64 = conn.scard("rq:workers")?;
        Ok((n == 2).then_some(()))
    })?;
    let killed = Instant::now();
    victim.signal("KILL")?;
    victim.wait_exit(Duration::from_secs(5))?;
    wait_for(Duration::from_secs(15), "all 50 jobs running again", || {
        for id in &ids {
            if worker_of(&mut conn, id)?.as_deref() != Some("w-lease-survivor") {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    eprintln!(
        "all 50 jobs re-run {:.1}s after kill -9 (default lease)",
        killed.elapsed().as_secs_f64()
    );
    wait_statuses(&rq.db, &ids, &["finished"], Duration::from_secs(30))?;
    assert_each_ran_once(&rq.db, &ids, &[victim, survivor])?;
    Ok(())
}

#[test]
fn a_paused_worker_past_its_lease_never_overwrites_the_newer_execution() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let paused = WorkerProcess::start(
        &rq.db,
        "w-paused",
        &["--lease-secs", "3", "--metrics-addr", &addr],
    )?;
    rq.enqueue(
        r#"
from rq import Retry
Queue("default", connection=r).enqueue("mindora.sleep", 6, job_id="late", retry=Retry(max=1))
"#,
    )?;
    let id = vec!["late".to_string()];
    wait_statuses(&rq.db, &id, &["started"], Duration::from_secs(10))?;
    paused.signal("STOP")?;
    let _other = WorkerProcess::start(&rq.db, "w-other", &["--lease-secs", "3"])?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(15), "the job re-run by w-other", || {
        Ok((worker_of(&mut conn, "late")?.as_deref() == Some("w-other")).then_some(()))
    })?;
    paused.signal("CONT")?;
    // The paused worker's own run ends while w-other's still runs: its outcome is dropped.
    wait_for(Duration::from_secs(15), "the stale outcome counted", || {
        let m = http_get(port, "/metrics").unwrap_or_default();
        Ok(m.lines()
            .any(|l| l.starts_with("mindora_stale_outcomes_total") && l.ends_with(" 1"))
            .then_some(()))
    })?;
    rq.check(
        r#"
from rq.job import Job
j = Job.fetch("late", connection=r)
assert j.get_status() == "started", j.get_status()
assert j.worker_name == "w-other", j.worker_name
assert j.latest_result() is None, j.latest_result()
assert r.xlen("rq:results:late") == 0
"#,
    )?;
    wait_statuses(&rq.db, &id, &["finished"], Duration::from_secs(20))?;
    rq.check(
        r#"
from rq.job import Job
j = Job.fetch("late", connection=r)
res = j.results()
assert len(res) == 1, res
assert r.xrange("rq:results:late")[0][1][b"worker_name"] == b"w-other"
assert r.hget("rq:worker:w-paused", "successful_job_count") == b"0"
"#,
    )?;
    Ok(())
}

#[test]
fn a_python_rq_workers_long_job_is_never_taken_early() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(r#"Queue("default", connection=r).enqueue("time.sleep", 10, job_id="py-long", job_timeout=60)"#)?;
    let mut py = python_command(rq.version, &rq.db)?
        .args([
            "-m",
            "rq.cli",
            "worker",
            "--burst",
            "-n",
            "py-worker",
            "--url",
        ])
        .arg(rq.db.url())
        .arg("default")
        .spawn()?;
    let id = vec!["py-long".to_string()];
    let started = wait_statuses(&rq.db, &id, &["started"], Duration::from_secs(20));
    if started.is_err() {
        let _ = py.kill();
    }
    started?;
    let _ours = WorkerProcess::start(&rq.db, "w-mixed", &["--lease-secs", "1"])?;
    let mut conn = rq.db.conn()?;
    // Several lease periods and lease checks pass while the Python job runs.
    std::thread::sleep(Duration::from_secs(6));
    let st = status(&mut conn, "py-long")?;
    let by = worker_of(&mut conn, "py-long")?;
    let result = py.wait();
    assert_eq!(st.as_deref(), Some("started"));
    assert_eq!(by.as_deref(), Some("py-worker"));
    assert!(result?.success());
    wait_statuses(&rq.db, &id, &["finished"], Duration::from_secs(5))?;
    let runs: i64 = redis::cmd("XLEN")
        .arg("rq:results:py-long")
        .query(&mut conn)?;
    assert_eq!(runs, 1);
    Ok(())
}

#[test]
fn a_worker_restarted_under_its_name_takes_its_jobs_back_at_once() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
from rq import Retry
for i in range(5):
    q.enqueue("mindora.sleep", 2, job_id=f"s{i}", retry=Retry(max=1), job_timeout=60)
"#,
    )?;
    let ids: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    // A lease far longer than the wait below: only the restart can bring the jobs back.
    let args = ["--concurrency", "5", "--lease-secs", "120"];
    let mut first = WorkerProcess::start(&rq.db, "w-same", &args)?;
    wait_statuses(&rq.db, &ids, &["started"], Duration::from_secs(20))?;
    first.signal("KILL")?;
    first.wait_exit(Duration::from_secs(5))?;
    let again = WorkerProcess::start(&rq.db, "w-same", &args)?;
    wait_statuses(&rq.db, &ids, &["finished"], Duration::from_secs(20))?;
    assert_each_ran_once(&rq.db, &ids, &[again])?;
    Ok(())
}
