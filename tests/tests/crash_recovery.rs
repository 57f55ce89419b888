//! Crashes and shutdowns: kill -9 loses no job, SIGTERM drains, Redis connection loss heals.

use std::time::Duration;

use anyhow::Result;
use mindora_tests::python_rq::{PythonRq, FAST_RECOVERY};
use mindora_tests::{wait_for, wait_statuses, WorkerProcess};

#[test]
fn kill_9_mid_jobs_then_restart_loses_nothing() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
from rq import Retry
for i in range(10):
    q.enqueue("mindora.sleep", 2, job_id=f"r{i}", retry=Retry(max=1), job_timeout=10)
for i in range(10):
    q.enqueue("mindora.sleep", 2, job_id=f"n{i}", job_timeout=10)
"#,
    )?;
    let fast = [FAST_RECOVERY, &["--concurrency", "10"]].concat();
    let mut victim = WorkerProcess::start(&rq.db, "w-victim", &fast)?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(10), "ten jobs running", || {
        let running: i64 = redis::cmd("ZCARD").arg("rq:wip:default").query(&mut conn)?;
        Ok((running == 10).then_some(()))
    })?;
    victim.signal("KILL")?;
    victim.wait_exit(Duration::from_secs(5))?;
    let _survivor = WorkerProcess::start(&rq.db, "w-survivor", &fast)?;
    let all: Vec<String> = (0..10)
        .flat_map(|i| [format!("r{i}"), format!("n{i}")])
        .collect();
    wait_statuses(
        &rq.db,
        &all,
        &["finished", "failed"],
        Duration::from_secs(60),
    )?;
    let out = rq.run(
        r#"
from rq.job import Job
st = {}
for j in Job.fetch_many([f"{p}{i}" for p in "rn" for i in range(10)], connection=r):
    st.setdefault(j.get_status(), []).append(j.id)
    if j.get_status() == "failed":
        assert "AbandonedJobError" in j.latest_result().exc_string, j.latest_result().exc_string
# Jobs with a retry left were requeued and finished; the rest finished or failed as abandoned.
assert all(f"r{i}" in st.get("finished", []) for i in range(10)), st
assert sum(len(v) for v in st.values()) == 20, st
print(sorted((k, len(v)) for k, v in st.items()))
"#,
    )?;
    assert!(out.contains("finished"), "{out}");
    Ok(())
}

#[test]
fn sigterm_finishes_running_jobs_then_exits_cleanly() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(
        r#"
for i in range(3):
    Queue("default", connection=r).enqueue("mindora.sleep", 1.5, job_id=f"s{i}")
for i in range(3):
    Queue("default", connection=r).enqueue("mindora.sleep", 0.1, job_id=f"later{i}", at_front=False)
"#,
    )?;
    let mut w = WorkerProcess::start(&rq.db, "w-term", &["--concurrency", "3"])?;
    let ids: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    wait_statuses(&rq.db, &ids, &["started"], Duration::from_secs(10))?;
    w.signal("TERM")?;
    let status = w.wait_exit(Duration::from_secs(20))?;
    assert!(status.success());
    wait_statuses(&rq.db, &ids, &["finished"], Duration::from_secs(1))?;
    let mut conn = rq.db.conn()?;
    let waiting: i64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut conn)?;
    assert_eq!(waiting, 3, "no new job is taken after SIGTERM");
    let workers: i64 = redis::cmd("SCARD").arg("rq:workers").query(&mut conn)?;
    assert_eq!(workers, 0);
    Ok(())
}

#[test]
fn shutdown_grace_expiry_requeues_running_jobs() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("mindora.sleep", 60, job_id="long")
"#,
    )?;
    let mut w = WorkerProcess::start(&rq.db, "w-grace", &["--shutdown-grace-secs", "1"])?;
    wait_statuses(
        &rq.db,
        &["long".to_string()],
        &["started"],
        Duration::from_secs(10),
    )?;
    w.signal("TERM")?;
    w.wait_exit(Duration::from_secs(20))?;
    wait_statuses(
        &rq.db,
        &["long".to_string()],
        &["queued"],
        Duration::from_secs(2),
    )?;
    let mut conn = rq.db.conn()?;
    let head: Option<String> = redis::cmd("LINDEX")
        .arg("rq:queue:default")
        .arg(0)
        .query(&mut conn)?;
    assert_eq!(head.as_deref(), Some("long"));
    Ok(())
}

#[test]
fn redis_connection_loss_is_survived() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let mut w = WorkerProcess::start(&rq.db, "w-reconnect", &["--heartbeat-secs", "1"])?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(10), "worker registration", || {
        let n: i64 = redis::cmd("SCARD").arg("rq:workers").query(&mut conn)?;
        Ok((n == 1).then_some(()))
    })?;
    // Kill every client connection of this database except ours, twice.
    for _ in 0..2 {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn)?;
        let me: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn)?;
        for line in list.lines() {
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
            };
            if field("db").as_deref() == Some(&rq.db.db.to_string())
                && field("id") != Some(me.to_string())
            {
                if let Some(id) = field("id") {
                    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("ID")
                        .arg(id)
                        .query(&mut conn);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("mindora.echo", "after", job_id="after")
"#,
    )?;
    wait_statuses(
        &rq.db,
        &["after".to_string()],
        &["finished"],
        Duration::from_secs(20),
    )?;
    assert!(w.alive());
    Ok(())
}

#[test]
fn a_job_stranded_between_pop_and_claim_is_recovered() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    // A worker killed right after its BLMOVE leaves the id in the intermediate list, its job
    // still `queued`. Simulate exactly that, then start a worker on two lanes.
    rq.enqueue(
        r#"
q = Queue("low", connection=r)
q.enqueue("mindora.echo", "stranded", job_id="stranded")
assert r.lmove("rq:queue:low", "rq:queue:low:intermediate") == b"stranded"
"#,
    )?;
    let _w = WorkerProcess::start(
        &rq.db,
        "w-stranded",
        &["--queues", "high,low", "--recover-every-secs", "1"],
    )?;
    wait_statuses(
        &rq.db,
        &["stranded".to_string()],
        &["finished"],
        Duration::from_secs(20),
    )?;
    let mut conn = rq.db.conn()?;
    let left: i64 = redis::cmd("LLEN")
        .arg("rq:queue:low:intermediate")
        .query(&mut conn)?;
    assert_eq!(left, 0);
    Ok(())
}

#[test]
fn an_idle_worker_on_several_lanes_picks_up_lower_lane_jobs() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    let _w = WorkerProcess::start(&rq.db, "w-lanes", &["--queues", "high,default,low"])?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(10), "worker registration", || {
        let n: i64 = redis::cmd("SCARD").arg("rq:workers").query(&mut conn)?;
        Ok((n == 1).then_some(()))
    })?;
    for lane in ["low", "default", "high"] {
        let id = format!("on-{lane}");
        rq.run(&format!(
            r#"Queue("{lane}", connection=r).enqueue("mindora.echo", job_id="{id}")"#
        ))?;
        // Picked up although the idle worker blocks on the highest lane only.
        wait_statuses(&rq.db, &[id], &["finished"], Duration::from_secs(10))?;
    }
    Ok(())
}
