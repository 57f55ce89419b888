//! rq's own monitoring tools as real clients of a running mindora-worker, before, during
//! and after work: rq-dashboard (its workers, queues and job JSON endpoints, and requeue)
//! and rq-exporter (`rq_workers{state}`, `rq_jobs{status}`, success / failed counters).
//! Both run from the pinned `venv-rqtools` (tests/setup-python.sh) on free loopback ports.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_tests::{
    free_port, http_get, http_json, rq_tool, run_python, wait_for, wait_statuses, RedisDb,
    WorkerProcess,
};
use serde_json::Value;

const WORKER: &str = "w-tools";

/// A tool server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command, port: u16, probe: &str) -> Result<Server> {
    let server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting an rq tool")?,
    );
    wait_for(Duration::from_secs(30), probe, || {
        Ok(http_get(port, probe).ok().map(|_| ()))
    })?;
    Ok(server)
}

/// Our worker as rq-dashboard's `/0/data/workers.json` lists it.
fn dash_worker(port: u16) -> Result<Value> {
    let all = http_json(port, "GET", "/0/data/workers.json")?;
    all["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == WORKER))
        .cloned()
        .context("worker not listed by rq-dashboard")
}

/// One sample of rq-exporter's scrape: the value of `name` whose labels include all `labels`.
fn sample(port: u16, name: &str, labels: &[&str]) -> Result<Option<f64>> {
    let text = http_get(port, "/metrics")?;
    Ok(text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (lab, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|want| lab.split(',').any(|have| have == *want))
            .then(|| value.trim().parse().ok())
            .flatten()
    }))
}

fn wait_worker(port: u16, what: &str, cond: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_for(Duration::from_secs(20), what, || {
        Ok(dash_worker(port).ok().filter(|w| cond(w)))
    })
}

fn wait_sample(port: u16, name: &str, labels: &[&str], want: f64) -> Result<()> {
    let what = format!("{name}{labels:?} = {want}");
    wait_for(Duration::from_secs(20), &what, || {
        Ok((sample(port, name, labels)? == Some(want)).then_some(()))
    })
}

#[test]
fn rq_dashboard_and_rq_exporter_read_the_truth() -> Result<()> {
    let db = RedisDb::lease()?;
    let _worker = WorkerProcess::start(
        &db,
        WORKER,
        &[
            "--queues",
            "default",
            "--concurrency",
            "2",
            "--heartbeat-secs",
            "1",
        ],
    )?;
    let dash_port = free_port()?;
    let _dash = start(
        Command::new(rq_tool("rq-dashboard")?)
            .args(["-b", "127.0.0.1", "-p", &dash_port.to_string(), "-u"])
            .arg(db.url()),
        dash_port,
        "/0/data/workers.json",
    )?;
    let exp_port = free_port()?;
    let _exporter = start(
        Command::new(rq_tool("rq-exporter")?)
            .args([
                "--host",
                "127.0.0.1",
                "-p",
                &exp_port.to_string(),
                "--redis-url",
            ])
            .arg(db.url()),
        exp_port,
        "/metrics",
    )?;
    let me = format!("name=\"{WORKER}\"");

    // Before work: idle, no current job, zero counters.
    let w = wait_worker(dash_port, "idle before work", |w| w["state"] == "idle")?;
    assert_eq!(w["current_job"], "idle", "{w}");
    assert_eq!(w["successful_job_count"], 0, "{w}");
    wait_sample(exp_port, "rq_workers", &[&me, "state=\"idle\""], 1.0)?;
    wait_sample(exp_port, "rq_workers_success_total", &[&me], 0.0)?;

    // During: busy on the running job, seen in the started registry and the job endpoint.
    run_python(
        "2.12",
        &db,
        r#"Queue("default", connection=r).enqueue("mindora.sleep", 3, job_id="long")"#,
    )?;
    wait_statuses(&db, &["long".into()], &["started"], Duration::from_secs(10))?;
    let w = wait_worker(dash_port, "busy on the long job", |w| w["state"] == "busy")?;
    assert_eq!(w["current_job"]["job_id"], "long", "{w}");
    let queues = http_json(dash_port, "GET", "/0/data/queues.json")?;
    let default = queues["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "default"))
        .cloned()
        .context("default queue listed")?;
    assert_eq!(default["started_job_registry_count"], 1, "{default}");
    let job = http_json(dash_port, "GET", "/0/data/job/long.json")?;
    assert_eq!(job["status"], "started", "{job}");
    wait_sample(exp_port, "rq_workers", &[&me, "state=\"busy\""], 1.0)?;
    wait_sample(
        exp_port,
        "rq_jobs",
        &["queue=\"default\"", "status=\"started\""],
        1.0,
    )?;

    // After: idle again, one success and one failure counted by both tools.
    run_python(
        "2.12",
        &db,
        r#"Queue("default", connection=r).enqueue("mindora.fail", "boom", job_id="bad")"#,
    )?;
    wait_statuses(
        &db,
        &["long".into()],
        &["finished"],
        Duration::from_secs(20),
    )?;
    wait_statuses(&db, &["bad".into()], &["failed"], Duration::from_secs(20))?;
    let w = wait_worker(dash_port, "idle after work", |w| {
        w["state"] == "idle" && w["failed_job_count"] == 1
    })?;
    assert_eq!(w["current_job"], "idle", "{w}");
    assert_eq!(w["successful_job_count"], 1, "{w}");
    let job = http_json(dash_port, "GET", "/0/data/job/long.json")?;
    assert_eq!(job["status"], "finished", "{job}");
    let job = http_json(dash_port, "GET", "/0/data/job/bad.json")?;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["exc_info"].as_str().unwrap_or("").contains("boom"),
        "{job}"
    );
    let failed = http_json(dash_port, "GET", "/0/data/jobs/default/failed/8/asc/1.json")?;
    assert_eq!(failed["jobs"][0]["id"], "bad", "{failed}");
    wait_sample(exp_port, "rq_workers", &[&me, "state=\"idle\""], 1.0)?;
    wait_sample(exp_port, "rq_workers_success_total", &[&me], 1.0)?;
    wait_sample(exp_port, "rq_workers_failed_total", &[&me], 1.0)?;
    wait_sample(
        exp_port,
        "rq_jobs",
        &["queue=\"default\"", "status=\"finished\""],
        1.0,
    )?;
    wait_sample(
        exp_port,
        "rq_jobs",
        &["queue=\"default\"", "status=\"failed\""],
        1.0,
    )?;

    // Requeue from the dashboard: the worker runs it again (and it fails again).
    let requeued = http_json(dash_port, "POST", "/job/bad/requeue")?;
    assert_eq!(requeued["status"], "OK", "{requeued}");
    let w = wait_worker(dash_port, "the requeued job ran again", |w| {
        w["failed_job_count"] == 2 && w["state"] == "idle"
    })?;
    assert_eq!(w["successful_job_count"], 1, "{w}");
    wait_sample(exp_port, "rq_workers_failed_total", &[&me], 2.0)?;
    Ok(())
}
