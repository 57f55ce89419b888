//! The rq worker hash tells the truth, read by Python rq itself (`Worker.all()`,
//! `get_state()`, `get_current_job_id()`, counters): idle before work, busy on a running job
//! while any runs (one job ending does not make a concurrent worker idle), idle with no
//! current job after, with rq's success / failure counters and total working time.

use anyhow::Result;
use mindora_tests::{run_python, RedisDb, WorkerProcess, RQ_VERSIONS};

const SCRIPT: &str = r#"
from rq import Worker
NAME = "w-state"
def me():
    for w in Worker.all(connection=r):
        if w.name == NAME:
            return w
def state():
    w = me()
    if w is None:
        return None
    return (w.get_state(), w.get_current_job_id(), w.successful_job_count,
            w.failed_job_count, w.total_working_time)
def wait(cond, what, t=20):
    deadline = time.time() + t
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(what + ": " + repr(state()))
q = Queue("default", connection=r)

wait(lambda: state() is not None and state()[0] == "idle", "idle before work")
s = state()
assert s[1] is None and s[2] == 0 and s[3] == 0, s

short = q.enqueue("mindora.sleep", 1, job_id="short")
long = q.enqueue("mindora.sleep", 3, job_id="long")
wait(lambda: state()[0] == "busy", "busy during work")
assert state()[1] in ("short", "long"), state()
wait(lambda: short.get_status(refresh=True) == "finished", "short finished")
s = state()
assert s[0] == "busy" and s[1] == "long", ("busy on the job still running", s)
wait(lambda: long.get_status(refresh=True) == "finished", "long finished")
wait(lambda: state()[0] == "idle", "idle after work")
s = state()
assert s[1] is None and s[2] == 2 and s[3] == 0 and s[4] >= 4.0, s

bad = q.enqueue("mindora.fail", "boom", job_id="bad")
wait(lambda: bad.get_status(refresh=True) == "failed", "failed job")
wait(lambda: state()[3] == 1, "failed counter")
s = state()
assert s[0] == "idle" and s[1] is None and s[2] == 2, s
print("ok")
"#;

#[test]
fn worker_state_and_counters_as_rq_reads_them() -> Result<()> {
    for version in RQ_VERSIONS {
        let db = RedisDb::lease()?;
        let _worker = WorkerProcess::start(
            &db,
            "w-state",
            &[
                "--queues",
                "default",
                "--concurrency",
                "4",
                "--heartbeat-secs",
                "1",
            ],
        )?;
        let out = run_python(version, &db, SCRIPT)?;
        assert_eq!(out.trim(), "ok", "rq {version}");
    }
    Ok(())
}
