//! Python enqueues functions written in Python → `mindora-worker --python` runs them in its
//! process pool → Python reads results, `exc_string`s and `meta` back with rq itself.

use std::time::Duration;

use anyhow::Result;
use mindora_tests::python_rq::{PythonRq, FAST_RECOVERY};
use mindora_tests::{free_port, http_get, ids, wait_for, wait_statuses};

const T: Duration = Duration::from_secs(60);

#[test]
fn python_functions_run_with_rq_results_tracebacks_meta_and_callbacks() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(r#"
from rq import Callback
from rq.serializers import JSONSerializer
import pytasks
q.enqueue(pytasks.move, pytasks.Point(1, 2), dy=3, job_id="obj", on_success=Callback(pytasks.on_success))
Queue("default", connection=r, serializer=JSONSerializer).enqueue("pytasks.add", 1, y=2, job_id="json")
q.enqueue("pytasks.boom", "no good", job_id="boom", on_failure=Callback(pytasks.on_failure))
q.enqueue("pytasks.progress", 2, job_id="meta", meta={"who": "py"})
for i in range(3):
    q.enqueue(pytasks.rendezvous, 3, job_id=f"async{i}")
q.enqueue("mindora.echo", "built in", job_id="native")
"#)?;
        let _w = rq.start_pool_worker("w-py", 1, &["--concurrency", "8"])?;
        wait_statuses(
            &rq.db,
            &ids(&[
                "obj", "json", "meta", "async0", "async1", "async2", "native",
            ]),
            &["finished"],
            T,
        )?;
        wait_statuses(&rq.db, &ids(&["boom"]), &["failed"], T)?;
        rq.check(r#"
import pytasks
from rq.job import Job
from rq.serializers import JSONSerializer
j = Job.fetch("obj", connection=r)
assert j.return_value() == pytasks.Point(1, 5), j.return_value()
assert r.get("cb:success:obj") == b"Point(x=1, y=5)"
assert Job.fetch("json", connection=r, serializer=JSONSerializer).return_value() == {"sum": 3}
exc = Job.fetch("boom", connection=r).latest_result().exc_string
assert exc.startswith("Traceback (most recent call last):") and "pytasks.py" in exc and "ValueError: no good" in exc, exc
assert r.get("cb:failure:boom") == b"ValueError: no good"
m = Job.fetch("meta", connection=r)
assert m.get_meta() == {"who": "py", "step": 2}, m.get_meta()
assert m.return_value() == {"id": "meta", "origin": "default"}, m.return_value()
assert len({Job.fetch(f"async{i}", connection=r).return_value() for i in range(3)}) == 1
assert Job.fetch("native", connection=r).return_value() == {"args": ["built in"], "kwargs": {}}
"#)?;
    }
    Ok(())
}

#[test]
fn timeouts_segfaults_stops_and_memory_recycling_leave_the_worker_running() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(r#"
from rq import Callback
import pytasks
q.enqueue("pytasks.stuck", job_id="stuck", job_timeout=1, on_failure=Callback(pytasks.on_failure))
q.enqueue("pytasks.segfault", job_id="segv")
q.enqueue("pytasks.grow", 200, job_id="grow")
q.enqueue("pytasks.stuck", job_id="stopme", job_timeout=600, on_stopped=Callback(pytasks.on_stopped))
"#)?;
    let mut w = rq.start_pool_worker(
        "w-py-crash",
        1,
        &["--concurrency", "1", "--python-max-rss-mb", "150"],
    )?;
    wait_statuses(&rq.db, &ids(&["stuck", "segv"]), &["failed"], T)?;
    wait_statuses(&rq.db, &ids(&["grow"]), &["finished"], T)?;
    // rq's stop command: the job is recorded as stopped, its process killed, and its
    // on_stopped callback runs in another process.
    wait_statuses(&rq.db, &ids(&["stopme"]), &["started"], T)?;
    rq.run("from rq.command import send_stop_job_command\nsend_stop_job_command(r, 'stopme')")?;
    wait_statuses(&rq.db, &ids(&["stopme"]), &["stopped"], T)?;
    rq.enqueue("q.enqueue('pytasks.pid', job_id='after')")?;
    wait_statuses(&rq.db, &ids(&["after"]), &["finished"], T)?;
    assert!(
        w.alive(),
        "the worker survives timeouts, segfaults and recycling"
    );
    rq.check(r#"
from rq.job import Job
exc = Job.fetch("stuck", connection=r).latest_result().exc_string
assert "JobTimeoutException" in exc and "(1 seconds)" in exc, exc
exc = Job.fetch("segv", connection=r).latest_result().exc_string
assert "SIGSEGV" in exc, exc
assert Job.fetch("grow", connection=r).return_value() != Job.fetch("after", connection=r).return_value(), "recycled"
# Callbacks run in a fresh pool process; on a loaded machine its start takes seconds.
for _ in range(600):
    if r.get("cb:failure:stuck"):
        break
    time.sleep(0.1)
assert r.get("cb:failure:stuck").startswith(b"JobTimeoutException"), r.get("cb:failure:stuck")
for _ in range(600):
    if r.get("cb:stopped:stopme"):
        break
    time.sleep(0.1)
assert r.get("cb:stopped:stopme") == b"stopped", r.get("cb:stopped:stopme")
"#)?;
    Ok(())
}

#[test]
fn kill_9_with_python_jobs_in_flight_recovers_them() -> Result<()> {
    let rq = PythonRq::lease("2.12")?;
    rq.enqueue(
        r#"
from rq import Retry
for i in range(2):
    q.enqueue("pytasks.nap", 3, job_id=f"r{i}", retry=Retry(max=1), job_timeout=6)
"#,
    )?;
    let fast = [FAST_RECOVERY, &["--concurrency", "4"]].concat();
    let mut victim = rq.start_pool_worker("w-py-victim", 1, &fast)?;
    let mut conn = rq.db.conn()?;
    wait_for(Duration::from_secs(30), "two Python jobs running", || {
        let running: i64 = redis::cmd("ZCARD").arg("rq:wip:default").query(&mut conn)?;
        Ok((running == 2).then_some(()))
    })?;
    let runners = children(victim.child.id());
    assert!(
        !runners.is_empty(),
        "the worker runs its Python processes as children"
    );
    victim.signal("KILL")?;
    victim.wait_exit(Duration::from_secs(5))?;
    // Their pipe closed: the orphaned Python processes exit at once, jobs unfinished.
    wait_for(
        Duration::from_secs(10),
        "orphaned Python processes to exit",
        || {
            Ok(runners
                .iter()
                .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists() || is_zombie(*p))
                .then_some(()))
        },
    )?;
    let _survivor = rq.start_pool_worker("w-py-survivor", 1, &fast)?;
    wait_statuses(&rq.db, &ids(&["r0", "r1"]), &["finished"], T)?;
    Ok(())
}

/// Pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(1) == Some(&pid.to_string()))
                })
                .unwrap_or(false)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// rq's timeout text, as its death penalty raises it.
fn rq_timeout(secs: u64) -> String {
    format!("rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({secs} seconds)")
}

/// Issue 20, findings 1-3: with `--concurrency` above `--python-processes`, a job claimed
/// while every process is busy still gets its whole `job_timeout` (it starts when a
/// process takes the job), callbacks that ran are not reported as not run, and every
/// timeout reads as rq's, in `exc_string` and in what `on_failure` receives.
#[test]
fn jobs_waiting_for_a_process_keep_their_timeout_and_callbacks_are_reported_truthfully(
) -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        rq.enqueue(
            r#"
from rq import Callback
import pytasks
cb = dict(on_success=Callback(pytasks.on_success), on_failure=Callback(pytasks.on_failure))
for i in range(4):
    q.enqueue("pytasks.sleepy", 3, job_id=f"slow{i}", job_timeout=30)
q.enqueue("pytasks.noop", job_id="quick", job_timeout=2, **cb)
q.enqueue("pytasks.boom", "no good", job_id="boom", **cb)
q.enqueue("pytasks.stuck", job_id="stuck", job_timeout=1, **cb)
"#,
        )?;
        let _w = rq.start_pool_worker("w-py-wait", 2, &["--concurrency", "8"])?;
        let slow = ["slow0", "slow1", "slow2", "slow3"];
        wait_statuses(&rq.db, &ids(&slow), &["finished"], T)?;
        wait_statuses(&rq.db, &ids(&["quick"]), &["finished"], T)?;
        wait_statuses(&rq.db, &ids(&["boom", "stuck"]), &["failed"], T)?;
        // Alone: a plain function's timeout kill would also end an async job sharing its process.
        rq.enqueue(r#"
from rq import Callback
import pytasks
Queue("default", connection=r).enqueue("pytasks.nap", 30, job_id="nap", job_timeout=1, on_failure=Callback(pytasks.on_failure))
"#)?;
        wait_statuses(&rq.db, &ids(&["nap"]), &["failed"], T)?;
        rq.check(&format!(
                r#"
from rq.job import Job
def wait_key(key):
    # Callbacks of killed processes run in a fresh one; on a loaded machine that takes seconds.
    for _ in range(600):
        if r.get(key) is not None:
            return r.get(key)
        time.sleep(0.1)
    return None
for jid in ["slow0", "slow1", "slow2", "slow3", "quick", "boom", "stuck", "nap"]:
    note = r.hget("rq:job:" + jid, "mindora_callbacks_not_run")
    assert note is None, (jid, note)
assert wait_key("cb:success:quick") == b"None", r.get("cb:success:quick")
assert wait_key("cb:failure:boom") == b"ValueError: no good", r.get("cb:failure:boom")
for jid in ["stuck", "nap"]:
    exc = Job.fetch(jid, connection=r).latest_result().exc_string
    assert exc.startswith("Traceback (most recent call last):"), exc
    assert exc.rstrip().endswith("{rq}"), exc
    got = wait_key(f"cb:failure:{{jid}}")
    assert got == b"JobTimeoutException: Task exceeded maximum timeout value (1 seconds)", (jid, got)
nap = Job.fetch("nap", connection=r).latest_result().exc_string
assert "killed" not in nap and "replaced" not in nap, nap
"#,
            rq = rq_timeout(1)
        ))?;
    }
    Ok(())
}

/// The wait for a free process is bounded by `--python-wait-secs` and reported as such;
/// the pool's metrics (busy / idle processes, wait time, restarts and recycles by reason)
/// are on `/metrics`.
#[test]
fn the_wait_for_a_process_is_bounded_and_the_pool_reports_metrics() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
from rq import Callback
import pytasks
q.enqueue("pytasks.sleepy", 4, job_id="hold")
"#,
    )?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let flags = [
        "--concurrency",
        "3",
        "--python-wait-secs",
        "1",
        "--python-max-jobs",
        "2",
        "--metrics-addr",
        &addr,
    ];
    let _w = rq.start_pool_worker("w-py-metrics", 1, &flags)?;
    // `starved` only once `hold` has the one process: enqueued together, either could win
    // it (CI saw `starved` win on a loaded machine, and then nothing starved).
    wait_statuses(&rq.db, &ids(&["hold"]), &["started"], T)?;
    rq.enqueue(
        r#"
from rq import Callback
import pytasks
q.enqueue("pytasks.noop", job_id="starved", job_timeout=60, on_failure=Callback(pytasks.on_failure))
"#,
    )?;
    wait_statuses(&rq.db, &ids(&["hold"]), &["finished"], T)?;
    wait_statuses(&rq.db, &ids(&["starved"]), &["failed"], T)?;
    // One at a time now: a timeout kill, then jobs enough for a recycle.
    let one = |code: &str, id: &str, status: &str| -> Result<()> {
        rq.run(code)?;
        wait_statuses(&rq.db, &ids(&[id]), &[status], T)
    };
    one(
        "Queue('default', connection=r).enqueue('pytasks.stuck', job_id='stuck', job_timeout=1)",
        "stuck",
        "failed",
    )?;
    for i in 0..3 {
        let code = format!("Queue('default', connection=r).enqueue('pytasks.noop', job_id='n{i}')");
        one(&code, &format!("n{i}"), "finished")?;
    }
    rq.check(
        r#"
from rq.job import Job
exc = Job.fetch("starved", connection=r).latest_result().exc_string
assert "PythonProcessWaitTimeout" in exc and "--python-wait-secs" in exc, exc
assert "JobTimeoutException" not in exc, exc
# It never started: its on_failure did not run, and its record says so.
assert r.get("cb:failure:starved") is None
assert b"on_failure" in r.hget("rq:job:starved", "mindora_callbacks_not_run")
"#,
    )?;
    let body = wait_for(Duration::from_secs(30), "an idle pool on /metrics", || {
        let text = http_get(port, "/metrics")?;
        Ok(
            (text.contains(r#"mindora_python_processes{state="busy"} 0"#)
                && text.contains(r#"mindora_python_processes{state="idle"} 1"#))
            .then_some(text),
        )
    })?;
    for needle in [
        "mindora_python_process_wait_seconds_bucket{le=",
        "mindora_python_process_wait_seconds_count ",
        "mindora_python_process_wait_timeouts_total 1",
        r#"mindora_python_process_restarts_total{reason="timeout"} 1"#,
        r#"mindora_python_process_restarts_total{reason="crashed"} 0"#,
        r#"mindora_python_process_recycles_total{reason="max_rss"} 0"#,
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    let recycles = body
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"mindora_python_process_recycles_total{reason="max_jobs"} "#)
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        recycles.is_some_and(|n| n >= 1.0),
        "a process recycled after --python-max-jobs 2: {recycles:?}\n{body}"
    );
    Ok(())
}
