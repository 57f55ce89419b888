//! Successes recorded in batches (one finish-script call for several jobs): every job is
//! recorded exactly once and reads back in Python rq 2.12 and 3.0 as if recorded alone, and
//! fencing is decided per job inside a batch (a recovered execution's late outcome is
//! dropped while the others in the same call are recorded).

use std::time::Duration;

use anyhow::Result;
use mindora_sdk::connect::ManagerOptions;
use mindora_sdk::RedisConnector;
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{run_python, wait_statuses, RedisDb, WorkerProcess};
use mindora_worker::handler::Output;
use mindora_worker::rq::store::{FinishError, RqStore};
use redis::Commands;

async fn store(db: &RedisDb, name: &str) -> Result<RqStore> {
    let connector = RedisConnector::from_url(&db.url())?;
    let conn = connector.manager(&ManagerOptions::default()).await?;
    let blocking = connector.manager(&ManagerOptions::default()).await?;
    Ok(RqStore::new(conn, blocking, name))
}

/// Three jobs end together and are recorded by one call; the middle one's execution was
/// recovered meanwhile and re-run by another worker, so only its late outcome is dropped.
/// (A current-thread runtime: the three finishes are all queued before the batching task
/// first runs, so they go in one call.)
#[tokio::test(flavor = "current_thread")]
async fn fencing_holds_inside_one_batch() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(
        r#"
q = Queue("batch", connection=r)
for i in range(3):
    q.enqueue("mindora.noop", job_id=f"f{i}", result_ttl=600)
"#,
    )?;
    let queues = vec!["batch".to_string()];
    let old = store(&rq.db, "w-old").await?;
    old.register_birth(&queues, "test").await?;
    let claimed = old.claim(&queues, 3, 30, 60, None).await?;
    assert_eq!(claimed.len(), 3);
    let late = &claimed[1];

    // What recovery does to the middle job, then another worker runs it.
    let mut conn = rq.db.conn()?;
    let member = format!("{}:{}", late.job_id, late.exec_id);
    let removed: i64 = conn.zrem("rq:wip:batch", &member)?;
    assert_eq!(removed, 1);
    let _: i64 = conn.rpush("rq:queue:batch", &late.job_id)?;
    let new = store(&rq.db, "w-new").await?;
    let again = new.claim(&queues, 1, 30, 60, None).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job_id, late.job_id);

    let out = Output::Value(serde_json::json!({"ok": true}));
    let serializer = claimed[0].hash.call()?.0;
    let results = futures::future::join_all(
        claimed
            .iter()
            .map(|job| old.finish(job, serializer, &out, false)),
    )
    .await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(FinishError::Stale(_))),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);

    let checked = run_python(
        "3.0",
        &rq.db,
        r#"
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry
for i in (0, 2):
    j = Job.fetch(f"f{i}", connection=r)
    assert j.get_status() == "finished", j.get_status()
    assert j.return_value() == {"ok": True}, j.return_value()
    assert len(j.results()) == 1
late = Job.fetch("f1", connection=r)
assert late.get_status() == "started", late.get_status()
assert late.worker_name == "w-new", late.worker_name
assert late.results() == [], late.results()
assert sorted(FinishedJobRegistry("batch", connection=r).get_job_ids()) == ["f0", "f2"]
assert StartedJobRegistry("batch", connection=r).get_job_ids() == ["f1"]
w = r.hgetall("rq:worker:w-old")
assert w[b"successful_job_count"] == b"2", w
assert w[b"state"] == b"idle", w
assert b"current_job" not in w, w
assert r.scard("rq:worker:w-old:executions") == 0
print("ok")
"#,
    )?;
    assert_eq!(checked.trim(), "ok");
    Ok(())
}

/// Hundreds of jobs ending at once on a busy worker (their successes go out in batches):
/// each is recorded exactly once, with its result, its dependents queued and its own
/// result TTL, rq 2.12 reads every one back, and the worker ends idle with every success
/// counted.
#[test]
fn many_jobs_finishing_at_once_are_each_recorded_once() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(r#"
q = Queue("burst", connection=r)
with r.pipeline() as p:
    for i in range(400):
        q.enqueue("mindora.echo", i, job_id=f"m{i}", result_ttl=600 if i % 10 else 0, pipeline=p)
    p.execute()
for i in range(20):
    q.enqueue("mindora.echo", f"child{i}", job_id=f"c{i}", depends_on=[f"m{i * 10 + 1}", f"m{i * 10 + 2}"])
"#)?;
    let _worker = WorkerProcess::start(
        &rq.db,
        "w-batch",
        &["--queues", "burst", "--concurrency", "64"],
    )?;
    let kept: Vec<String> = (0..400)
        .filter(|i| i % 10 != 0)
        .map(|i| format!("m{i}"))
        .chain((0..20).map(|i| format!("c{i}")))
        .collect();
    wait_statuses(&rq.db, &kept, &["finished"], Duration::from_secs(60))?;
    rq.check(
        r#"
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry
for i in range(400):
    key = f"rq:job:m{i}"
    if i % 10 == 0:
        assert not r.exists(key) and not r.exists(f"rq:results:m{i}"), i
        continue
    j = Job.fetch(f"m{i}", connection=r)
    assert j.get_status() == "finished", (i, j.get_status())
    assert j.return_value()["args"] == [i], (i, j.return_value())
    assert r.xlen(f"rq:results:m{i}") == 1, i
    assert 500 < r.ttl(key) <= 600, (i, r.ttl(key))
for i in range(20):
    c = Job.fetch(f"c{i}", connection=r)
    assert c.return_value()["args"] == [f"child{i}"], c.return_value()
    assert r.xlen(f"rq:results:c{i}") == 1, i
assert len(FinishedJobRegistry("burst", connection=r)) == 360 + 20
assert len(StartedJobRegistry("burst", connection=r)) == 0
deadline = time.time() + 5
while True:
    w = r.hgetall("rq:worker:w-batch")
    if w.get(b"state") == b"idle" or time.time() > deadline:
        break
    time.sleep(0.05)
assert w[b"successful_job_count"] == b"420", w
assert w[b"state"] == b"idle", w
assert b"current_job" not in w, w
assert float(w[b"total_working_time"]) > 0, w
assert r.scard("rq:worker:w-batch:executions") == 0
"#,
    )?;
    Ok(())
}
