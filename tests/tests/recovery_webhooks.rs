//! Jobs failed by recovery send their `failed` webhooks, as rq 3.0's
//! `StartedJobRegistry.cleanup` does: a worker is killed (-9) while running a job with no
//! retries left and one with a retry; another worker recovers both, by the liveness lease
//! (`recover_lapsed.lua`) and by rq's TTL rule (`recover.lua`). The failed one's webhook
//! reaches a local HTTP server with rq's payload; the re-queued one sends no `failed`
//! webhook, and its `finished` one once it has run again.

use std::time::Duration;

use anyhow::{ensure, Result};
use mindora_tests::hook_server::HookServer;
use mindora_tests::{
    free_port, http_get, run_python, wait_for, wait_statuses, RedisDb, WorkerProcess,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

fn recovered_jobs_send_failed_webhooks(path: &str, worker_args: &[&str]) -> Result<()> {
    let hooks = HookServer::start()?;
    let db = RedisDb::lease()?;
    let u = hooks.url(&format!("/{path}"));
    run_python(
        "3.0",
        &db,
        &format!(
            r#"
from rq import Retry, Webhook
q = Queue("default", connection=r)
q.enqueue("mindora.sleep", 30, job_id="gone", webhooks=[
    Webhook("{u}/failed", "failed", method="POST", headers={{"X-Token": "t"}}),
    Webhook("{u}/finished-gone", "finished")])
q.enqueue("mindora.sleep", 3, job_id="again", retry=Retry(max=1), webhooks=[
    Webhook("{u}/failed-again", "failed", method="POST"),
    Webhook("{u}/finished-again", "finished", method="POST")])
"#
        ),
    )?;
    let ids = vec!["gone".to_string(), "again".to_string()];
    let mut victim_args = vec!["--concurrency", "4"];
    victim_args.extend_from_slice(worker_args);
    let mut victim = WorkerProcess::start(&db, &format!("w-{path}-victim"), &victim_args)?;
    wait_statuses(&db, &ids, &["started"], T)?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut survivor_args = vec!["--concurrency", "4", "--metrics-addr", &addr];
    survivor_args.extend_from_slice(worker_args);
    let _survivor = WorkerProcess::start(&db, &format!("w-{path}-survivor"), &survivor_args)?;
    victim.signal("KILL")?;
    victim.wait_exit(Duration::from_secs(5))?;
    wait_statuses(&db, &["gone".into()], &["failed"], T)?;
    let req = wait_for(T, "the failed webhook of the recovered job", || {
        Ok(hooks
            .requests()
            .into_iter()
            .find(|r| r.path == format!("/{path}/failed")))
    })?;
    let body: Value = serde_json::from_str(&req.body)?;
    ensure!(req.method == "POST", "{req:?}");
    ensure!(req.headers.get("x-token").map(String::as_str) == Some("t"));
    ensure!(
        req.headers.get("content-type").map(String::as_str) == Some("application/json"),
        "{req:?}"
    );
    ensure!(
        body["job_id"] == "gone"
            && body["status"] == "failed"
            && body["func_name"] == "mindora.sleep",
        "{body}"
    );
    let exc = body["exc_info"].as_str().unwrap_or_default();
    ensure!(
        exc.starts_with("Moved to FailedJobRegistry, due to AbandonedJobError"),
        "exc_info {exc:?}"
    );
    ensure!(
        body["ended_at"].is_string() && body["enqueued_at"].is_string(),
        "{body}"
    );
    // The job with a retry left was queued again, ran on the survivor and finished.
    wait_statuses(&db, &["again".into()], &["finished"], T)?;
    wait_for(T, "the re-run job's finished webhook", || {
        Ok(hooks
            .requests()
            .iter()
            .any(|r| r.path == format!("/{path}/finished-again"))
            .then_some(()))
    })?;
    let sent = wait_for(T, "both webhooks counted as sent", || {
        let m = http_get(port, "/metrics")?;
        Ok(m.contains("mindora_webhooks_total{outcome=\"sent\"} 2")
            .then_some(m))
    })?;
    ensure!(!sent.contains("outcome=\"failed\""), "{sent}");
    let paths: Vec<String> = hooks.requests().into_iter().map(|r| r.path).collect();
    ensure!(
        paths.len() == 2,
        "only the failed job's failed webhook and the re-run's finished one: {paths:?}"
    );
    let out = run_python(
        "3.0",
        &db,
        r#"
from rq.job import Job
g = Job.fetch("gone", connection=r)
assert g.get_status() == "failed", g.get_status()
assert "AbandonedJobError" in g.latest_result().exc_string
print("ok")
"#,
    )?;
    ensure!(out.trim() == "ok", "{out}");
    eprintln!("{path}: recovered job's failed webhook received: {body}");
    Ok(())
}

#[test]
fn jobs_failed_by_lease_recovery_send_their_failed_webhooks() -> Result<()> {
    recovered_jobs_send_failed_webhooks("lease", &["--lease-secs", "3"])
}

#[test]
fn jobs_failed_by_rq_ttl_recovery_send_their_failed_webhooks() -> Result<()> {
    recovered_jobs_send_failed_webhooks(
        "ttl",
        &[
            "--lease-secs",
            "0",
            "--heartbeat-secs",
            "1",
            "--abandon-grace-secs",
            "3",
            "--recover-every-secs",
            "1",
        ],
    )
}
