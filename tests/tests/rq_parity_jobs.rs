//! rq job options the worker honours as rq's own worker does, checked from real Python rq
//! 2.12 and 3.0: `Repeat` (runs and their spacing read back from Python), `Webhook`s (received
//! by a local HTTP server and compared with what a real rq worker sends), and the job record
//! of Python callbacks the worker does not run.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use mindora_tests::hook_server::{dead_url, HookServer, Recorded};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{free_port, ids, wait_for, wait_statuses, WorkerProcess};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

#[test]
fn repeat_follows_rq_interval_indexing_and_failed_runs_do_not_repeat() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let version = rq.version;
        rq.enqueue(
            r#"
from rq import Repeat, Callback
q.enqueue("mindora.echo", 1, job_id="rep", repeat=Repeat(times=3, interval=[1, 2]))
q.enqueue("mindora.echo", 2, job_id="rep0", repeat=Repeat(times=2))
q.enqueue("mindora.fail", "no", job_id="repfail", repeat=Repeat(times=2, interval=1))
q.enqueue("mindora.echo", 3, job_id="cb", on_success=Callback("jobs.echo"))
q.enqueue("mindora.fail", "x", job_id="cbfail", on_failure=Callback("jobs.echo"))
"#,
        )?;
        let _w = WorkerProcess::start(&rq.db, "w-repeat", &["--concurrency", "4"])?;
        let mut conn = rq.db.conn()?;
        wait_for(T, "4 runs of rep and 3 of rep0", || {
            let rep: i64 = redis::cmd("XLEN").arg("rq:results:rep").query(&mut conn)?;
            let rep0: i64 = redis::cmd("XLEN").arg("rq:results:rep0").query(&mut conn)?;
            Ok((rep == 4 && rep0 == 3).then_some(()))
        })?;
        wait_statuses(&rq.db, &ids(&["rep", "rep0"]), &["finished"], T)?;
        wait_statuses(&rq.db, &ids(&["repfail", "cbfail"]), &["failed"], T)?;
        let out = rq.run(
            r#"
from rq.job import Job
j = Job.fetch("rep", connection=r)
assert j.get_status() == "finished" and j.repeats_left == 0, (j.get_status(), j.repeats_left)
ts = sorted(res.created_at for res in j.results())
gaps = [(b - a).total_seconds() for a, b in zip(ts, ts[1:])]
# rq's rule: interval i for repeat i, the last one reused; rq schedules on whole seconds
# and its scheduler moves due jobs each second, so a gap is within [interval - 1, interval + 4).
want = [1, 2, 2]
assert len(gaps) == 3 and all(w - 1 <= g < w + 4 for g, w in zip(gaps, want)), gaps
j0 = Job.fetch("rep0", connection=r)
assert j0.repeats_left == 0 and len(j0.results()) == 3, (j0.repeats_left, len(j0.results()))
f = Job.fetch("repfail", connection=r)
assert f.get_status() == "failed" and f.repeats_left == 2 and len(f.results()) == 1
for jid, hook in (("cb", "on_success"), ("cbfail", "on_failure")):
    note = r.hget("rq:job:" + jid, "mindora_callbacks_not_run").decode()
    assert hook in note and "jobs.echo" in note and "not run" in note, note
print("ok", gaps)
"#,
        )?;
        assert!(out.starts_with("ok"), "rq {version}: {out}");
        eprintln!("rq {version}: repeat gaps {}", out.trim());
    }
    Ok(())
}

fn find<'a>(reqs: &'a [Recorded], path: &str) -> Result<&'a Recorded> {
    reqs.iter()
        .find(|r| r.path == path)
        .with_context(|| format!("no request to {path}: {reqs:?}"))
}

fn keys_of(body: &str) -> Result<Vec<String>> {
    let v: Value = serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?;
    let mut k: Vec<String> = v
        .as_object()
        .context("payload is not an object")?
        .keys()
        .cloned()
        .collect();
    k.sort();
    Ok(k)
}

#[test]
fn webhooks_are_sent_as_rq_sends_them_and_never_hold_the_job() -> Result<()> {
    for rq in PythonRq::each_version() {
        let rq = rq?;
        let version = rq.version;
        let hooks = HookServer::start()?;
        let u = hooks.url("");
        let dead = dead_url()?;
        // The reference: the same webhooks sent by a real rq worker.
        rq.run(&format!(
            r#"
from rq import Webhook, SimpleWorker
U, DEAD = "{u}", "{dead}"
qr = Queue("ref", connection=r)
qr.enqueue("jobs.echo", 1, job_id="ref", webhooks=[Webhook(U + "/ref", "finished", method="POST", headers={{"X-Token": "t1"}})])
qr.enqueue("jobs.boom", "kaboom", job_id="refbad", webhooks=[Webhook(U + "/reffailed", "failed", method="POST")])
SimpleWorker([qr], connection=r).work(burst=True)
q = Queue("hooks", connection=r)
q.enqueue("mindora.echo", 1, job_id="ok", webhooks=[
    Webhook(U + "/post", "finished", method="POST", headers={{"X-Token": "t1"}}),
    Webhook(U + "/get?x=1", "finished", headers={{"X-Get": "g"}}),
    Webhook(U + "/never", "failed")])
q.enqueue("mindora.fail", "kaboom", job_id="bad", webhooks=[
    Webhook(U + "/failed", "failed", method="POST"), Webhook(U + "/never2", "finished")])
q.enqueue("mindora.echo", 2, job_id="slow", webhooks=[
    Webhook(U + "/slow", "finished", method="POST", timeout=10), Webhook(DEAD, "finished", timeout=2)])
for i in range(3):
    q.enqueue("mindora.echo", i, job_id=f"after-{{i}}")
"#
        ))?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        // One slot: were a webhook to hold it, the jobs after `slow` would wait 10 s.
        let _w = WorkerProcess::start(
            &rq.db,
            "w-hooks",
            &[
                "--queues",
                "hooks",
                "--concurrency",
                "1",
                "--metrics-addr",
                &addr,
            ],
        )?;
        let all = ids(&["ok", "slow", "after-0", "after-1", "after-2"]);
        wait_statuses(&rq.db, &all, &["finished"], T)?;
        wait_statuses(&rq.db, &ids(&["bad"]), &["failed"], T)?;
        let reqs = wait_for(T, "the webhooks to arrive", || {
            let r = hooks.requests();
            let want = [
                "/post",
                "/get?x=1",
                "/failed",
                "/slow",
                "/ref",
                "/reffailed",
            ];
            Ok(want
                .iter()
                .all(|p| r.iter().any(|x| x.path == *p))
                .then_some(r))
        })?;
        // Every job after `slow` finished while its webhook was still held by the server.
        if find(&reqs, "/slow")?.answered {
            bail!("rq {version}: the slow endpoint answered before the later jobs finished");
        }
        let post = find(&reqs, "/post")?;
        let reference = find(&reqs, "/ref")?;
        assert_eq!(post.method, "POST");
        assert_eq!(post.headers.get("x-token").map(String::as_str), Some("t1"));
        assert_eq!(
            post.headers.get("content-type"),
            reference.headers.get("content-type")
        );
        assert_eq!(
            keys_of(&post.body)?,
            keys_of(&reference.body)?,
            "rq {version}"
        );
        let body: Value = serde_json::from_str(&post.body)?;
        let expected = rq.run(
            "from rq.job import Job\nj = Job.fetch('ok', connection=r)\nprint(j.enqueued_at.isoformat())",
        )?;
        assert_eq!(body["job_id"], "ok");
        assert_eq!(body["func_name"], "mindora.echo");
        assert_eq!(body["status"], "finished");
        assert_eq!(body["enqueued_at"].as_str(), Some(expected.trim()));
        assert!(body["ended_at"]
            .as_str()
            .is_some_and(|s| s.ends_with("+00:00")));
        let get = find(&reqs, "/get?x=1")?;
        assert_eq!((get.method.as_str(), get.body.as_str()), ("GET", ""));
        assert_eq!(get.headers.get("x-get").map(String::as_str), Some("g"));
        let failed = find(&reqs, "/failed")?;
        assert_eq!(
            keys_of(&failed.body)?,
            keys_of(&find(&reqs, "/reffailed")?.body)?
        );
        let fb: Value = serde_json::from_str(&failed.body)?;
        assert_eq!(fb["status"], "failed");
        assert!(fb["exc_info"]
            .as_str()
            .is_some_and(|e| e.contains("kaboom")));
        assert!(
            !reqs.iter().any(|r| r.path.starts_with("/never")),
            "{reqs:?}"
        );
        let metrics = wait_for(T, "the dead endpoint to be counted", || {
            let m = mindora_tests::http_get(port, "/metrics")?;
            Ok(m.contains("mindora_webhooks_total{outcome=\"failed\"}")
                .then_some(m))
        })?;
        // /post, /get, /failed; /slow too once its 10 s are over.
        assert!(
            ["3", "4"]
                .iter()
                .any(|n| metrics
                    .contains(&format!("mindora_webhooks_total{{outcome=\"sent\"}} {n}"))),
            "{metrics}"
        );
    }
    Ok(())
}
