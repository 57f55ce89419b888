//! The worker's /metrics, /healthz and /readyz, scraped from a real process after real jobs.
//! The scrape is saved (to `$MINDORA_METRICS_SNAPSHOT`, or the target dir) so that
//! `infra/check.sh --worker-metrics FILE` can check every dashboard and alert query
//! against metric names the worker really exports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{free_port, wait_for, wait_statuses};

fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn metrics_and_health_endpoints_report_real_jobs() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
from rq import Retry
for i in range(5):
    q.enqueue("mindora.echo", i, job_id=f"ok{i}")
q.enqueue("mindora.fail", "x", job_id="dead")
q.enqueue("mindora.fail", "y", job_id="retry", retry=Retry(max=1))
q.enqueue("pytasks.add", 1, job_id="py")
Queue("low", connection=r).enqueue("mindora.sleep", 30, job_id="running")
"#,
    )?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    // A cron entry too, so the scrape carries the cron series the dashboard's Cron panels
    // query; its ticks go to a lane this worker does not serve, leaving the counts alone.
    let dir = std::env::temp_dir().join(format!(
        "mindora-metrics-{}-{}",
        std::process::id(),
        rq.db.db
    ));
    std::fs::create_dir_all(&dir)?;
    let cron = dir.join("cron.toml");
    std::fs::write(
        &cron,
        "[[job]]\nname = \"metrics-beat\"\ncron = \"* * * * * *\"\nqueue = \"cron-metrics\"\nfunc = \"mindora.noop\"\n",
    )?;
    let cron = cron.display().to_string();
    // The Python pool too (one process, one Python job), for the dashboard's Python row.
    let flags = [
        "--metrics-addr",
        &addr,
        "--queues",
        "default,low",
        "--cron",
        &cron,
    ];
    let _w = rq.start_pool_worker("w-metrics", 1, &flags)?;
    let ids: Vec<String> = ["ok0", "ok1", "ok2", "ok3", "ok4", "py"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    wait_statuses(&rq.db, &ids, &["finished"], Duration::from_secs(20))?;
    wait_statuses(
        &rq.db,
        &["dead".into(), "retry".into()],
        &["failed"],
        Duration::from_secs(20),
    )?;
    wait_statuses(
        &rq.db,
        &["running".into()],
        &["started"],
        Duration::from_secs(20),
    )?;
    assert!(get(port, "/healthz")?.starts_with("HTTP/1.1 200"));
    // A request head split across segments is read whole.
    let mut split = TcpStream::connect(("127.0.0.1", port))?;
    split.set_read_timeout(Some(Duration::from_secs(5)))?;
    split.write_all(b"GET /heal")?;
    std::thread::sleep(Duration::from_millis(100));
    split.write_all(b"thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    split.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_for(Duration::from_secs(10), "readiness", || {
        Ok(get(port, "/readyz")?
            .starts_with("HTTP/1.1 200")
            .then_some(()))
    })?;
    // Queue gauges refresh every 5 s; the first pass may predate the jobs' completion.
    let body = wait_for(
        Duration::from_secs(20),
        "the default lane's depth and backlog gauges to read 0, and the pool's series",
        || {
            let text = get(port, "/metrics")?;
            // The true backlog of "low" is its one running job (queued + started + due);
            // "default" reaches 0 only once its jobs have ended, not just left the list.
            Ok(
                (text.contains(r#"mindora_queue_depth{source="redis",queue="default"} 0"#)
                    && text.contains(r#"mindora_queue_backlog{queue="default"} 0"#)
                    && text.contains(r#"mindora_queue_backlog{queue="low"} 1"#)
                    && text.contains(
                        r#"mindora_cron_last_run_timestamp_seconds{entry="metrics-beat"}"#,
                    )
                    // The pool starts before the recorder exists and republishes its
                    // zeroed series every second.
                    && text.contains(r#"mindora_python_process_restarts_total{reason="timeout"} 0"#))
                .then_some(text),
            )
        },
    )?;
    let l = r#"source="redis",queue="default",function="mindora.echo""#;
    for needle in [
        format!("mindora_jobs_started_total{{{l}}} 5"),
        format!("mindora_jobs_finished_total{{{l}}} 5"),
        r#"mindora_jobs_failed_total{source="redis",queue="default",function="mindora.fail"} 3"#.to_string(),
        r#"mindora_jobs_retried_total{source="redis",queue="default",function="mindora.fail"} 1"#.to_string(),
        r#"mindora_jobs_dead_lettered_total{source="redis",queue="default",function="mindora.fail"} 2"#.to_string(),
        format!("mindora_job_duration_seconds_bucket{{{l},le=\"0.0005\"}}"),
        r#"mindora_jobs_in_flight{source="redis"} 1"#.to_string(),
        r#"mindora_queue_depth{source="redis",queue="default"} 0"#.to_string(),
        r#"mindora_queue_oldest_job_age_seconds{source="redis",queue="low"}"#.to_string(),
        r#"mindora_worker_info{name="w-metrics","#.to_string(),
        "mindora_worker_concurrency 16".to_string(),
        r#"mindora_queue_backlog_jobs{queue="low",state="started"} 1"#.to_string(),
        r#"mindora_queue_backlog_jobs{queue="low",state="queued"} 0"#.to_string(),
        r#"mindora_cron_enqueued_total{entry="metrics-beat"}"#.to_string(),
        r#"mindora_cron_missed_ticks_total{entry="metrics-beat"} 0"#.to_string(),
        r#"mindora_cron_next_run_timestamp_seconds{entry="metrics-beat"}"#.to_string(),
        r#"mindora_python_processes{state="idle"}"#.to_string(),
        "mindora_python_process_wait_seconds_bucket{le=".to_string(),
        r#"mindora_python_process_restarts_total{reason="timeout"} 0"#.to_string(),
        r#"mindora_python_process_recycles_total{reason="max_jobs"} 0"#.to_string(),
    ] {
        assert!(body.contains(&needle), "missing {needle:?} in:\n{body}");
    }
    let text = body.split("\r\n\r\n").nth(1).context("no HTTP body")?;
    let path = std::env::var("MINDORA_METRICS_SNAPSHOT").unwrap_or_else(|_| {
        mindora_tests::repo_root()
            .join("target/worker-metrics.txt")
            .display()
            .to_string()
    });
    std::fs::write(&path, text).with_context(|| format!("writing {path}"))?;
    Ok(())
}
