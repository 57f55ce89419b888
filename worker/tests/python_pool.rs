//! The `--python` pool as a component: jobs enqueued by real Python rq (2.12 and 3.0) into a
//! leased Redis database, run by `PythonPool` against the real runner processes, outcomes
//! checked in Rust and read back with Python where they are pickles.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{python, repo_root, RedisDb, RQ_VERSIONS};
use mindora_worker::python::{FailureKind, PoolConfig, PyJob, PyOutcome, PythonPool};

fn config(rq: &PythonRq, processes: usize) -> Result<PoolConfig> {
    let mut cfg = PoolConfig::new(python(rq.version)?, rq.db.url())?;
    cfg.python_path = vec![repo_root().join("python"), repo_root().join("tests/python")];
    cfg.processes = processes;
    Ok(cfg)
}

fn job(id: &str, timeout_secs: u64) -> PyJob {
    PyJob {
        id: id.to_string(),
        origin: "py".to_string(),
        timeout: Some(Duration::from_secs(timeout_secs)),
        trace: Default::default(),
    }
}

fn returned(outcome: PyOutcome, what: &str) -> Result<Vec<u8>> {
    match outcome {
        PyOutcome::Returned(bytes) => Ok(bytes),
        PyOutcome::Failed(f) => bail!("{what} failed: {:?}: {}", f.kind, f.exc_string),
    }
}

fn failed(outcome: PyOutcome, what: &str) -> Result<mindora_worker::python::PyFailure> {
    match outcome {
        PyOutcome::Failed(f) => Ok(f),
        PyOutcome::Returned(_) => bail!("{what} returned; it should have failed"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process's pid, as `pytasks.pid` returns it (pickled int).
async fn pid_of(pool: &PythonPool, rq: &PythonRq, id: &str) -> Result<String> {
    rq.run(&format!(
        "Queue('py', connection=r).enqueue('pytasks.pid', job_id={id:?})"
    ))?;
    let bytes = returned(pool.run(job(id, 30)).await, id)?;
    let out = rq.run(&format!(
        "import pickle; print(pickle.loads(bytes.fromhex({:?})))",
        hex(&bytes)
    ))?;
    Ok(out.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_jobs_run_with_rq_fidelity() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
from rq import Callback
from rq.serializers import JSONSerializer
import pytasks
q = Queue("py", connection=r)
q.enqueue("pytasks.move", pytasks.Point(1, 2), dx=5, job_id="obj", on_success=Callback(pytasks.on_success))
Queue("py", connection=r, serializer=JSONSerializer).enqueue("pytasks.add", 2, y=40, job_id="json")
q.enqueue("pytasks.boom", "bad input", job_id="boom", on_failure=Callback(pytasks.on_failure))
q.enqueue("pytasks.progress", 3, job_id="meta", meta={"who": "py"})
q.enqueue("pytasks.no_such_function", job_id="missing")
for i in range(4):
    q.enqueue(pytasks.rendezvous, 4, job_id=f"async{i}")
"#)?;
        let pool = PythonPool::start(config(&rq, 1)?).await?;
        let obj = returned(pool.run(job("obj", 30)).await, "obj")?;
        let json = returned(pool.run(job("json", 30)).await, "json")?;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json)?,
            serde_json::json!({"sum": 42})
        );
        let boom = failed(pool.run(job("boom", 30)).await, "boom")?;
        assert_eq!(boom.kind, FailureKind::Raised);
        assert_eq!(boom.exc_type, "ValueError");
        assert!(
            boom.exc_string
                .starts_with("Traceback (most recent call last):")
                && boom.exc_string.contains("pytasks.py")
                && boom.exc_string.contains("ValueError: bad input"),
            "{}",
            boom.exc_string
        );
        let missing = failed(pool.run(job("missing", 30)).await, "missing")?;
        assert!(
            missing.exc_string.contains("no_such_function"),
            "{}",
            missing.exc_string
        );
        returned(pool.run(job("meta", 30)).await, "meta")?;
        // Four `async def` jobs that only finish when all four run at once in one process.
        let runs = (0..4).map(|i| pool.run(job(&format!("async{i}"), 30)));
        let pids: Vec<Vec<u8>> = futures::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
            .map(|(i, o)| returned(o, &format!("async{i}")))
            .collect::<Result<_>>()?;
        assert!(
            pids.windows(2).all(|w| w[0] == w[1]),
            "one process ran them"
        );
        rq.check(&format!(
            r#"
import pickle, pytasks
from rq.job import Job
p = pickle.loads(bytes.fromhex({:?}))
assert p == pytasks.Point(6, 2), p
assert r.get("cb:success:obj") == b"Point(x=6, y=2)", r.get("cb:success:obj")
assert r.get("cb:failure:boom") == b"ValueError: bad input", r.get("cb:failure:boom")
meta = Job.fetch("meta", connection=r).get_meta()
assert meta == {{"who": "py", "step": 3}}, meta
"#,
            hex(&obj)
        ))?;
        pool.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_crashes_kill_and_replace_the_process() -> Result<()> {
    let rq = PythonRq::lease(RQ_VERSIONS[RQ_VERSIONS.len() - 1])?;
    rq.enqueue(
        r#"
from rq import Callback
import pytasks
q = Queue("py", connection=r)
q.enqueue("pytasks.stuck", job_id="stuck", on_failure=Callback(pytasks.on_failure))
q.enqueue("pytasks.segfault", job_id="segv")
q.enqueue("pytasks.nap", 3600, job_id="slow-async", on_failure=Callback(pytasks.on_failure))
q.enqueue("pytasks.stuck", job_id="dropped")
"#,
    )?;
    let pool = PythonPool::start(config(&rq, 1)?).await?;
    let first = pid_of(&pool, &rq, "pid1").await?;

    let stuck = failed(pool.run(job("stuck", 1)).await, "stuck")?;
    assert_eq!(stuck.kind, FailureKind::Timeout);
    assert!(
        stuck
            .exc_string
            .contains("JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"),
        "{}",
        stuck.exc_string
    );
    let second = pid_of(&pool, &rq, "pid2").await?;
    assert_ne!(first, second, "the stuck process was replaced");

    let segv = failed(pool.run(job("segv", 30)).await, "segv")?;
    assert_eq!(segv.kind, FailureKind::ProcessDied);
    assert!(segv.exc_string.contains("SIGSEGV"), "{}", segv.exc_string);
    let third = pid_of(&pool, &rq, "pid3").await?;
    assert_ne!(second, third, "the crashed process was replaced");

    // An async job past its timeout is cancelled; its process lives on.
    let slow = failed(pool.run(job("slow-async", 1)).await, "slow-async")?;
    assert_eq!(slow.kind, FailureKind::Timeout);
    // A dropped run (stop command, shutdown) kills the process of a plain function.
    let dropped = tokio::time::timeout(Duration::from_secs(2), pool.run(job("dropped", 60))).await;
    assert!(dropped.is_err(), "the stuck job cannot have finished");
    let fourth = pid_of(&pool, &rq, "pid4").await?;
    assert_ne!(third, fourth, "the dropped job's process was replaced");
    let stats = pool.stats();
    assert_eq!(stats.killed, 2, "{stats:?}");

    // Failure callbacks ran for the killed and the cancelled job (in another process).
    let mut conn = rq.db.conn()?;
    mindora_tests::wait_for(Duration::from_secs(20), "failure callbacks", || {
        let a: Option<String> = redis::Commands::get(&mut conn, "cb:failure:stuck")?;
        let b: Option<String> = redis::Commands::get(&mut conn, "cb:failure:slow-async")?;
        Ok(a.zip(b))
    })
    .map(|(a, b)| {
        assert!(a.starts_with("JobTimeoutException"), "{a}");
        assert!(b.starts_with("JobTimeoutException"), "{b}");
    })?;
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_recycled_by_memory_and_job_count() -> Result<()> {
    let rq = PythonRq::lease(RQ_VERSIONS[0])?;
    rq.run("Queue('py', connection=r).enqueue('pytasks.grow', 200, job_id='grow')")?;
    let mut cfg = config(&rq, 1)?;
    cfg.max_rss_bytes = 150 * 1024 * 1024;
    let pool = PythonPool::start(cfg).await?;
    let before = pid_of(&pool, &rq, "a").await?;
    returned(pool.run(job("grow", 30)).await, "grow")?;
    let after = pid_of(&pool, &rq, "b").await?;
    assert_ne!(before, after, "the 200 MiB process was recycled");
    assert_eq!(pool.stats().recycled, 1);
    pool.shutdown().await;

    let mut cfg = config(&rq, 1)?;
    cfg.max_jobs = 2;
    let pool = PythonPool::start(cfg).await?;
    let one = pid_of(&pool, &rq, "c").await?;
    let two = pid_of(&pool, &rq, "d").await?;
    let three = pid_of(&pool, &rq, "e").await?;
    assert_eq!(one, two);
    assert_ne!(two, three, "recycled after 2 jobs");
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_cannot_start_says_why() -> Result<()> {
    let db = RedisDb::lease()?;
    let cfg = PoolConfig::new("/nonexistent/python", db.url())?;
    let err = PythonPool::start(cfg).await.err().context("must fail")?;
    assert!(err.to_string().contains("/nonexistent/python"), "{err}");
    // A real interpreter without the runner on its path.
    let mut cfg = PoolConfig::new(python(RQ_VERSIONS[0])?, db.url())?;
    cfg.start_timeout = Duration::from_secs(20);
    let err = PythonPool::start(cfg).await.err().context("must fail")?;
    assert!(err.to_string().contains("mindora_runner"), "{err}");
    Ok(())
}

/// Log lines show `type: message`: the message drops the traceback's own `Type: ` prefix
/// (also rq's dotted one), so a line never reads `ValueError: ValueError: ...`.
#[test]
fn failure_messages_do_not_repeat_the_exception_type() {
    let f = |exc_type: &str, exc_string: &str| mindora_worker::python::PyFailure {
        kind: FailureKind::Raised,
        exc_type: exc_type.to_string(),
        exc_string: exc_string.to_string(),
    };
    let raised = f(
        "ValueError",
        "Traceback (most recent call last):\n  File \"t.py\", line 1\nValueError: bad input\n",
    );
    assert_eq!(raised.message(), "bad input");
    let timeout = f(
        "JobTimeoutException",
        "Traceback (most recent call last):\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (2 seconds)\n",
    );
    assert_eq!(
        timeout.message(),
        "Task exceeded maximum timeout value (2 seconds)"
    );
    let other = f(
        "WorkHorseTerminated",
        "Work-horse terminated unexpectedly: x",
    );
    assert_eq!(other.message(), "Work-horse terminated unexpectedly: x");
}
