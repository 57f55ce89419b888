//! rq's kill-horse command, and structured JSON logs with job id, queue and function.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_tests::{run_python, wait_statuses, worker_binary, RedisDb, WorkerProcess};
use serde_json::Value;

#[test]
fn kill_horse_stops_running_jobs() -> Result<()> {
    let db = RedisDb::lease()?;
    let mut w = WorkerProcess::start(&db, "w-horse", &["--concurrency", "2"])?;
    run_python(
        "2.12",
        &db,
        r#"
q = Queue("default", connection=r)
q.enqueue("mindora.sleep", 60, job_id="h1")
q.enqueue("mindora.sleep", 60, job_id="h2")
"#,
    )?;
    let ids = vec!["h1".to_string(), "h2".to_string()];
    wait_statuses(&db, &ids, &["started"], Duration::from_secs(10))?;
    run_python(
        "2.12",
        &db,
        r#"
from rq.command import send_kill_horse_command
send_kill_horse_command(r, "w-horse")
"#,
    )?;
    wait_statuses(&db, &ids, &["stopped"], Duration::from_secs(10))?;
    assert!(w.alive(), "the worker itself keeps running");
    Ok(())
}

#[test]
fn json_logs_carry_job_id_queue_and_function() -> Result<()> {
    let db = RedisDb::lease()?;
    run_python(
        "3.0",
        &db,
        r#"Queue("default", connection=r).enqueue("mindora.echo", 1, job_id="logged")"#,
    )?;
    let mut child = Command::new(worker_binary()?)
        .args([
            "--redis-url",
            &db.url(),
            "--name",
            "w-json",
            "--burst",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let lines: Vec<String> = BufReader::new(stdout).lines().collect::<Result<_, _>>()?;
    let status = child.wait()?;
    assert!(status.success());
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    let finished = events
        .iter()
        .find(|e| e["message"] == "job finished")
        .with_context(|| format!("no 'job finished' event in {lines:?}"))?;
    assert_eq!(finished["function"], "mindora.echo");
    let span = &finished["span"];
    assert_eq!(span["job_id"], "logged", "{finished}");
    assert_eq!(span["queue"], "default", "{finished}");
    Ok(())
}
