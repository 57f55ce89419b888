//! Python rq enqueues and inspects; mindora-worker runs. Every scenario runs against rq 2.12
//! and rq 3.0, with the pickle and the JSON serializer where it matters.

use std::time::Duration;

use anyhow::Result;
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{ids, wait_statuses, WorkerProcess};

const T: Duration = Duration::from_secs(30);

#[test]
fn results_statuses_and_registries_read_back_natively() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
from rq.serializers import JSONSerializer
Queue("default", connection=r).enqueue("mindora.echo", 1, "two", k={"n": [1, 2.5, None]}, job_id="pickled", meta={"who": "py"})
Queue("default", connection=r, serializer=JSONSerializer).enqueue("mindora.echo", 3, flag=True, job_id="jsoned")
"#)?;
        let _w = WorkerProcess::start(&rq.db, "w-results", &["--concurrency", "4"])?;
        wait_statuses(&rq.db, &ids(&["pickled", "jsoned"]), &["finished"], T)?;
        rq.check(r#"
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
j = Job.fetch("pickled", connection=r)
assert j.get_status() == JobStatus.FINISHED, j.get_status()
assert j.return_value() == {"args": [1, "two"], "kwargs": {"k": {"n": [1, 2.5, None]}}}, j.return_value()
res = j.latest_result()
assert res.type == res.Type.SUCCESSFUL and res.worker_name == "w-results", (res.type, res.worker_name)
assert j.worker_name == "w-results", j.worker_name
assert j.started_at and j.ended_at and j.ended_at >= j.started_at
assert j.meta == {"who": "py"}, j.meta
jj = Job.fetch("jsoned", connection=r, serializer=JSONSerializer)
assert jj.return_value() == {"args": [3], "kwargs": {"flag": True}}, jj.return_value()
q = Queue("default", connection=r)
assert set(FinishedJobRegistry(queue=q).get_job_ids()) == {"pickled", "jsoned"}
assert StartedJobRegistry(queue=q).get_job_ids() == []
"#)?;
    }
    Ok(())
}

#[test]
fn malformed_jobs_fail_with_reasons_and_the_worker_lives() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
import pickle, zlib, datetime
q.enqueue("mindora.fail", "kaboom", job_id="raises")
q.enqueue("no.such.function", job_id="unknown")
def raw(job_id, fields):
    r.hset("rq:job:" + job_id, mapping=dict(fields, status="queued", origin="default"))
    r.rpush("rq:queue:default", job_id)
raw("garbage", {"data": b"\x00not zlib nor pickle"})
raw("object", {"data": zlib.compress(pickle.dumps(("mindora.echo", None, (datetime.date(2020, 1, 1),), {})))})
raw("nodata", {"description": "no data field"})
raw("badshape", {"data": zlib.compress(pickle.dumps(["only", "two"]))})
q.enqueue("mindora.echo", "still alive", job_id="after")
"#)?;
        let mut w = WorkerProcess::start(&rq.db, "w-malformed", &["--concurrency", "2"])?;
        let bad = ids(&[
            "raises", "unknown", "garbage", "object", "nodata", "badshape",
        ]);
        wait_statuses(&rq.db, &bad, &["failed"], T)?;
        wait_statuses(&rq.db, &ids(&["after"]), &["finished"], T)?;
        assert!(w.alive(), "worker must survive malformed jobs");
        rq.check(r#"
from rq.job import Job
from rq.registry import FailedJobRegistry
q = Queue("default", connection=r)
failed = set(FailedJobRegistry(queue=q).get_job_ids())
assert failed == {"raises", "unknown", "garbage", "object", "nodata", "badshape"}, failed
def exc(i):
    return Job.fetch(i, connection=r).latest_result().exc_string
assert "kaboom" in exc("raises")
assert "no.such.function" in exc("unknown") and "mindora.echo" in exc("unknown")
assert "neither rq pickle nor rq JSON" in exc("garbage"), exc("garbage")
assert "undecodable pickle" in exc("object"), exc("object")
import base64, zlib
raw = r.xrevrange("rq:results:nodata", count=1)[0][1]  # rq itself cannot Job.fetch a hash without data
nodata = zlib.decompress(base64.b64decode(raw[b"exc_string"])).decode()
assert "no data" in nodata, nodata
assert "tuple" in exc("badshape"), exc("badshape")
"#)?;
    }
    Ok(())
}

#[test]
fn rq_retry_is_honoured_exactly_then_dead_letters_and_requeues_from_python() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
from rq import Retry
Queue("default", connection=r).enqueue("mindora.fail", "flaky", job_id="retried", retry=Retry(max=2, interval=[1, 2]))
"#)?;
        let _w = WorkerProcess::start(&rq.db, "w-retry", &[])?;
        let mut conn = rq.db.conn()?;
        // First failure: scheduled ~1 s later with one retry spent.
        let score = mindora_tests::wait_for(T, "retry to be scheduled", || {
            let s: Option<f64> = redis::cmd("ZSCORE")
                .arg("rq:scheduled:default")
                .arg("retried")
                .query(&mut conn)?;
            Ok(s)
        })?;
        let left: String = redis::cmd("HGET")
            .arg("rq:job:retried")
            .arg("retries_left")
            .query(&mut conn)?;
        assert_eq!(left, "1");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        assert!(
            score - now <= 1.5,
            "first retry interval is 1 s (score {score}, now {now})"
        );
        wait_statuses(&rq.db, &ids(&["retried"]), &["failed"], T)?;
        rq.check(
            r#"
from rq.job import Job
from rq.registry import FailedJobRegistry
j = Job.fetch("retried", connection=r)
assert j.retries_left == 0, j.retries_left
assert "flaky" in j.latest_result().exc_string
reg = FailedJobRegistry(queue=Queue("default", connection=r))
assert reg.get_job_ids() == ["retried"]
reg.requeue("retried")
"#,
        )?;
        // Requeued from Python: the worker runs it once more (and it fails again).
        let mut conn = rq.db.conn()?;
        mindora_tests::wait_for(T, "requeued job to run again", || {
            let n: i64 = redis::cmd("XLEN")
                .arg("rq:results:retried")
                .query(&mut conn)?;
            Ok((n >= 2).then_some(()))
        })?;
    }
    Ok(())
}

#[test]
fn default_exponential_policy_applies_to_jobs_without_one() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("mindora.fail", "always", job_id="expo")
Queue("once", connection=r).enqueue("mindora.fail", "no retries here", job_id="once")
"#,
    )?;
    let _w = WorkerProcess::start(
        &rq.db,
        "w-expo",
        &[
            "--queues",
            "default,once",
            "--retry",
            "max_attempts=3,base=1,factor=2,cap=10,jitter=0",
            "--queue-retry",
            "once=max_attempts=1",
        ],
    )?;
    wait_statuses(&rq.db, &ids(&["expo", "once"]), &["failed"], T)?;
    let mut conn = rq.db.conn()?;
    let intervals: String = redis::cmd("HGET")
        .arg("rq:job:expo")
        .arg("retry_intervals")
        .query(&mut conn)?;
    assert_eq!(intervals, "[1,2]");
    let failed_runs: i64 = redis::cmd("HGET")
        .arg("rq:worker:w-expo")
        .arg("failed_job_count")
        .query(&mut conn)?;
    assert_eq!(
        failed_runs, 4,
        "three attempts of expo, one of once (its queue's policy)"
    );
    let once_left: Option<String> = redis::cmd("HGET")
        .arg("rq:job:once")
        .arg("retries_left")
        .query(&mut conn)?;
    assert_eq!(once_left, None, "a one-attempt policy is never attached");
    Ok(())
}

#[test]
fn scheduled_and_dependent_jobs_run_when_due() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
from datetime import timedelta
from rq.job import Dependency
q.enqueue_in(timedelta(seconds=2), "mindora.echo", "later", job_id="later")
a = q.enqueue("mindora.sleep", 0.3, job_id="a")
b = q.enqueue("mindora.echo", "b", job_id="b")
c = q.enqueue("mindora.echo", "c", job_id="c", depends_on=[a, b])
bad = q.enqueue("mindora.fail", "x", job_id="bad")
d = q.enqueue("mindora.echo", "d", job_id="d", depends_on=Dependency(jobs=[bad], allow_failure=True))
e = q.enqueue("mindora.echo", "e", job_id="e", depends_on=bad)
assert c.get_status() == "deferred" and q.scheduled_job_registry.get_job_ids() == ["later"]
"#)?;
        let started = std::time::Instant::now();
        let _w = WorkerProcess::start(&rq.db, "w-sched", &["--concurrency", "4"])?;
        wait_statuses(&rq.db, &ids(&["a", "b", "c", "d"]), &["finished"], T)?;
        wait_statuses(&rq.db, &ids(&["later"]), &["finished"], T)?;
        assert!(
            started.elapsed() >= Duration::from_millis(1000),
            "scheduled job ran too early"
        );
        rq.check(
            r#"
from rq.job import Job
c = Job.fetch("c", connection=r); a = Job.fetch("a", connection=r)
assert c.started_at >= a.ended_at, (c.started_at, a.ended_at)
assert Job.fetch("e", connection=r).get_status() == "deferred"
"#,
        )?;
    }
    Ok(())
}

#[test]
fn timeouts_are_enforced() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("mindora.sleep", 30, job_id="slow", job_timeout=1)
"#,
    )?;
    let _w = WorkerProcess::start(&rq.db, "w-timeout", &[])?;
    let t0 = std::time::Instant::now();
    wait_statuses(&rq.db, &ids(&["slow"]), &["failed"], T)?;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let out = rq.run(
        r#"
from rq.job import Job
print(Job.fetch("slow", connection=r).latest_result().exc_string)
"#,
    )?;
    assert!(
        out.contains("Task exceeded maximum timeout value (1 seconds)"),
        "{out}"
    );
    Ok(())
}

#[test]
fn workers_register_like_rq_and_obey_rq_commands() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let mut w = WorkerProcess::start(
            &rq.db,
            "w-cmd",
            &["--queues", "high,default", "--heartbeat-secs", "1"],
        )?;
        rq.enqueue(
            r#"
Queue("default", connection=r).enqueue("mindora.sleep", 30, job_id="long")
"#,
        )?;
        wait_statuses(&rq.db, &ids(&["long"]), &["started"], T)?;
        rq.check(
            r#"
from rq import Worker
from rq.command import send_stop_job_command
from rq.job import Job
from rq.registry import StartedJobRegistry
deadline = time.time() + 10
while True:
    ws = Worker.all(connection=r)
    if ws and ws[0].get_state() == "busy" or time.time() > deadline:
        break
    time.sleep(0.2)
assert [w.name for w in ws] == ["w-cmd"], ws
w = ws[0]
assert w.queue_names() == ["high", "default"], w.queue_names()
assert w.get_state() == "busy", w.get_state()
assert w.get_current_job_id() == "long", w.get_current_job_id()
assert "long" in StartedJobRegistry(queue=Queue("default", connection=r)).get_job_ids()
job = Job.fetch("long", connection=r)
deadline = time.time() + 10
while job.meta.get("stage") != "sleeping" and time.time() < deadline:
    time.sleep(0.1)
    job.refresh()
assert job.meta == {"stage": "sleeping", "seconds": 30}, job.meta
send_stop_job_command(r, "long")
deadline = time.time() + 10
while Job.fetch("long", connection=r).get_status() != "stopped" and time.time() < deadline:
    time.sleep(0.1)
assert Job.fetch("long", connection=r).get_status() == "stopped"
"#,
        )?;
        let info = mindora_tests::python_command(rq.version, &rq.db)?
            .arg("-m")
            .arg("rq.cli")
            .arg("info")
            .arg("--url")
            .arg(rq.db.url())
            .output()?;
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(text.contains("w-cmd"), "rq info lists our worker:\n{text}");
        rq.run(
            r#"
from rq.command import send_shutdown_command
send_shutdown_command(r, "w-cmd")
"#,
        )?;
        let status = w.wait_exit(Duration::from_secs(15))?;
        assert!(status.success(), "clean exit on shutdown command");
        let out = rq.run(
            r#"
from rq import Worker
print(len(Worker.all(connection=r)))
"#,
        )?;
        assert_eq!(out.trim(), "0", "worker unregistered");
    }
    Ok(())
}

#[test]
fn progress_meta_is_visible_while_jobs_run() -> Result<()> {
    // mindora.sleep reports nothing; meta written by Python must survive our writes.
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("mindora.echo", job_id="m", meta={"stage": "queued"})
"#,
    )?;
    let _w = WorkerProcess::start(&rq.db, "w-meta", &[])?;
    wait_statuses(&rq.db, &ids(&["m"]), &["finished"], T)?;
    let out = rq.run(
        r#"
from rq.job import Job
j = Job.fetch("m", connection=r)
print(j.meta)
"#,
    )?;
    assert!(out.contains("'stage': 'queued'"), "{out}");
    Ok(())
}

/// A compose override turns the RabbitMQ source off with an empty `MINDORA_AMQP_URL`: the
/// worker (and the pipelines' notifier, which reads the same variable) takes it as unset and
/// runs the Redis jobs, instead of refusing to start.
#[test]
fn an_empty_amqp_url_means_the_source_is_off() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(r#"Queue("default", connection=r).enqueue("mindora.echo", 1, job_id="no-amqp")"#)?;
    let mut child = std::process::Command::new(mindora_tests::worker_binary()?)
        .args([
            "--redis-url",
            &rq.db.url(),
            "--name",
            "w-no-amqp",
            "--burst",
        ])
        .env("MINDORA_AMQP_URL", "")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    wait_statuses(&rq.db, &ids(&["no-amqp"]), &["finished"], T)?;
    let status = child.wait()?;
    assert!(status.success(), "worker exited with {status}");
    Ok(())
}
