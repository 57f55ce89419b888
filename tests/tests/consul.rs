//! Consul: registration, KV settings and live reload, from a real worker process against
//! the local Consul stand-in (`mindora_tests::consul`), which checks every request against
//! Consul's documented HTTP API. Jobs are enqueued and read back with real Python rq.

use std::time::Duration;

use anyhow::Result;
use mindora_tests::consul::{Comeback, ConsulWorker, FakeConsul};
use mindora_tests::{run_python, wait_for, wait_statuses, RedisDb};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn no_violations(consul: &FakeConsul) {
    let v = consul.violations();
    assert!(v.is_empty(), "requests broke Consul's API contract: {v:#?}");
}

fn reloads(w: &ConsulWorker, outcome: &str) -> f64 {
    w.metric(&format!(
        "mindora_config_reloads_total{{outcome=\"{outcome}\"}}"
    ))
    .ok()
    .flatten()
    .unwrap_or(0.0)
}

#[test]
fn registers_with_a_health_check_and_deregisters_on_sigterm() -> Result<()> {
    let db = RedisDb::lease()?;
    let consul = FakeConsul::start(Some("acl-token-1"))?;
    let dir = std::env::temp_dir().join(format!("mindora-consul-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, "acl-token-1\n")?;
    let mut w = ConsulWorker::start(
        &db,
        "w-consul-reg",
        &consul.addr(),
        &["--queues", "high,low", "--concurrency", "4"],
        &[(
            "CONSUL_HTTP_TOKEN_FILE",
            token_file.to_str().unwrap_or_default(),
        )],
    )?;
    let (id, svc) = wait_for(T, "the worker's registration", || {
        Ok(consul.services().into_iter().next())
    })?;
    assert_eq!(id, "mindora-worker-w-consul-reg");
    assert_eq!(svc["Name"], "mindora-worker");
    assert_eq!(svc["Address"], "127.0.0.1");
    assert_eq!(svc["Port"], w.port);
    let tags: Vec<&str> = svc["Tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for t in ["queue:high", "queue:low", "source:redis"] {
        assert!(tags.contains(&t), "{tags:?}");
    }
    assert!(tags.iter().any(|t| t.starts_with("version:")), "{tags:?}");
    assert_eq!(svc["Meta"]["concurrency"], "4");
    assert_eq!(svc["Meta"]["worker_name"], "w-consul-reg");
    let check = &svc["Check"];
    assert_eq!(
        check["HTTP"],
        format!("http://127.0.0.1:{}/healthz", w.port)
    );
    assert_eq!(check["DeregisterCriticalServiceAfter"], "60s");
    // The stand-in really runs the HTTP check against the worker's /healthz.
    let check_id = format!("service:{id}");
    wait_for(T, "the HTTP check to pass", || {
        Ok((consul.check_status(&check_id).as_deref() == Some("passing")).then_some(()))
    })?;
    w.process.signal("TERM")?;
    let status = w.process.wait_exit(T)?;
    assert!(status.success(), "{status}");
    consul.with_state(|s| {
        assert_eq!(s.deregistrations, vec![id.clone()]);
        assert!(s.services.is_empty());
        assert!(
            s.requests
                .iter()
                .all(|r| r.token.as_deref() == Some("acl-token-1")),
            "every request carries the ACL token"
        );
    });
    no_violations(&consul);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[test]
fn acl_denial_is_reported_and_the_worker_runs_on() -> Result<()> {
    let db = RedisDb::lease()?;
    let consul = FakeConsul::start(Some("right-token"))?;
    let w = ConsulWorker::start(
        &db,
        "w-consul-acl",
        &consul.addr(),
        &[],
        &[("CONSUL_HTTP_TOKEN", "wrong-token")],
    )?;
    w.wait_log(
        T,
        "Consul registration failed; retrying in the background (the worker runs on)",
        |l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.contains("ACL not found"))
        },
    )?;
    wait_for(T, "readiness without Consul", || {
        Ok(w.ready().then_some(()))
    })?;
    run_python(
        "3.0",
        &db,
        "Queue('default', connection=r).enqueue('mindora.echo', 1, job_id='acl1')",
    )?;
    wait_statuses(&db, &["acl1".into()], &["finished"], T)?;
    assert!(consul.services().is_empty());
    assert!(
        !w.log_text().contains("wrong-token"),
        "the token is never logged"
    );
    no_violations(&consul);
    Ok(())
}

#[test]
fn kv_settings_apply_at_start_and_reload_live() -> Result<()> {
    let db = RedisDb::lease()?;
    let consul = FakeConsul::start(None)?;
    consul.put("mindora/dev/worker/concurrency", "3");
    consul.put("mindora/dev/worker/queues", "\"kvq,other\"");
    consul.put("mindora/dev/worker/retry", "\"off\"");
    consul.put(
        "acme/dev/ai",
        r#"{"chunk_size":1000,"chunk_overlap":200,"embed_model":"m1"}"#,
    );
    let w = ConsulWorker::start(
        &db,
        "w-consul-kv",
        &consul.addr(),
        &[],
        &[("MINDORA_APPS", "acme")],
    )?;
    // Start: concurrency and queues from KV (nothing on the command line sets them).
    w.wait_metric(T, "mindora_worker_concurrency", |v| v == 3.0)?;
    let svc = wait_for(T, "registration", || {
        Ok(consul.services().into_values().next())
    })?;
    assert_eq!(svc["Meta"]["queues"], "kvq,other");
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "acme.pipeline" && l["new"].as_str().is_some_and(|n| n.contains("1000"))
    })?;

    // Retry policy, live: a failing job is dead at once, then retried after the change.
    run_python(
        "3.0",
        &db,
        "Queue('kvq', connection=r).enqueue('mindora.fail', 'x', job_id='f1')",
    )?;
    wait_statuses(&db, &["f1".into()], &["failed"], T)?;
    consul.put(
        "mindora/dev/worker/retry",
        "max_attempts=3,base=60,jitter=0",
    );
    w.wait_log(T, "config change applied", |l| l["setting"] == "retry")?;
    run_python(
        "3.0",
        &db,
        "Queue('kvq', connection=r).enqueue('mindora.fail', 'y', job_id='f2')",
    )?;
    wait_statuses(&db, &["f2".into()], &["scheduled"], T)?;

    // Log level, live (RUST_LOG is unset, so KV decides).
    consul.put(
        "mindora/dev/worker/log_level",
        "\"warn,mindora_worker=debug\"",
    );
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "log_level" && l["new"] == "warn,mindora_worker=debug"
    })?;

    // Per-app pipeline options, live.
    consul.put(
        "acme/dev/features",
        r#"{"analyze":false,"semantic_search":true}"#,
    );
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "acme.pipeline"
            && l["new"]
                .as_str()
                .is_some_and(|n| n.contains("\"analyze\":false"))
    })?;

    // A bad value is rejected, logged, counted; the last good one stays.
    let rejected = reloads(&w, "rejected");
    consul.put("mindora/dev/worker/concurrency", "lots");
    w.wait_log(
        T,
        "config value rejected; the last good value stays in force",
        |l| l["key"] == "mindora/dev/worker/concurrency" && l["value"] == "lots",
    )?;
    w.wait_metric(
        T,
        "mindora_config_reloads_total{outcome=\"rejected\"}",
        |v| v > rejected,
    )?;
    assert_eq!(w.metric("mindora_worker_concurrency")?, Some(3.0));
    let bad_app = reloads(&w, "rejected");
    consul.put("acme/dev/ai", r#"{"chunk_size":5}"#);
    w.wait_metric(
        T,
        "mindora_config_reloads_total{outcome=\"rejected\"}",
        |v| v > bad_app,
    )?;

    // Secrets are refused without being read; start-only settings need a restart.
    consul.put(
        "mindora/dev/worker/redis_url",
        "redis://:hunter2@elsewhere:6379/0",
    );
    w.wait_log(
        T,
        "secret refused from Consul KV (value not read); set it in the environment or a file",
        |l| l["key"] == "mindora/dev/worker/redis_url",
    )?;
    assert!(!w.log_text().contains("hunter2"));
    consul.put("mindora/dev/worker/shutdown_grace_secs", "5");
    w.wait_log(T, "config change needs a restart to take effect", |l| {
        l["key"] == "shutdown_grace_secs"
    })?;
    // Counted while running: retry, log level, features (start-time values are logged only).
    assert!(reloads(&w, "applied") >= 3.0);
    assert!(w.ready());
    no_violations(&consul);
    Ok(())
}

#[test]
fn consul_away_at_start_then_restarting() -> Result<()> {
    let db = RedisDb::lease()?;
    let mut consul = FakeConsul::start(None)?;
    consul.put("mindora/dev/worker/concurrency", "5");
    consul.stop();
    let w = ConsulWorker::start(&db, "w-consul-away", &consul.addr(), &[], &[])?;
    // Consul is down: the worker starts on its defaults, is ready and runs jobs.
    wait_for(T, "readiness without Consul", || {
        Ok(w.ready().then_some(()))
    })?;
    assert_eq!(w.metric("mindora_worker_concurrency")?, Some(16.0));
    run_python(
        "3.0",
        &db,
        "Queue('default', connection=r).enqueue('mindora.echo', 1, job_id='a1')",
    )?;
    wait_statuses(&db, &["a1".into()], &["finished"], T)?;

    // Consul comes up: the worker registers and starts watching by itself.
    consul.restart(Comeback::ForgetServices)?;
    wait_for(T, "registration after Consul came up", || {
        Ok((!consul.services().is_empty()).then_some(()))
    })?;
    consul.put("mindora/dev/worker/log_level", "debug");
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "log_level" && l["new"] == "debug"
    })?;

    // Consul restarts having lost its agent state and with its index gone backwards; a
    // change made meanwhile still arrives, and the worker registers again.
    let registrations = consul.with_state(|s| s.registrations.len());
    consul.stop();
    wait_for(T, "the worker to notice Consul is away", || {
        Ok(w.log_text()
            .contains("Consul KV watch failed")
            .then_some(()))
    })?;
    assert!(w.ready(), "readiness does not depend on Consul");
    consul.put("mindora/dev/worker/log_level", "info");
    consul.restart(Comeback::ResetIndexes)?;
    wait_for(T, "registration again", || {
        Ok(consul
            .with_state(|s| s.registrations.len() > registrations && !s.services.is_empty())
            .then_some(()))
    })?;
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "log_level" && l["new"] == "info"
    })?;
    no_violations(&consul);
    Ok(())
}

#[test]
fn concurrency_and_queues_reload_while_jobs_run() -> Result<()> {
    let db = RedisDb::lease()?;
    let consul = FakeConsul::start(None)?;
    consul.put("mindora/dev/worker/concurrency", "8");
    consul.put("mindora/dev/worker/queues", "cq1");
    run_python(
        "3.0",
        &db,
        "q = Queue('cq1', connection=r)\nfor i in range(60):\n    q.enqueue('mindora.sleep', 2, job_id=f's{i}')",
    )?;
    let w = ConsulWorker::start(&db, "w-consul-live", &consul.addr(), &[], &[])?;
    let in_flight = "mindora_jobs_in_flight{source=\"redis\"}";
    w.wait_metric(T, in_flight, |v| v == 8.0)?;

    // 8 -> 2 while jobs run: no job is interrupted, the running ones drain to 2.
    consul.put("mindora/dev/worker/concurrency", "2");
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "concurrency" && l["old"] == "8" && l["new"] == "2"
    })?;
    w.wait_metric(T, in_flight, |v| v <= 2.0)?;
    for _ in 0..10 {
        let n = w.metric(in_flight)?.unwrap_or(0.0);
        assert!(n <= 2.0, "{n} jobs in flight after the budget went to 2");
        let started = run_python(
            "3.0",
            &db,
            "from rq.registry import StartedJobRegistry\nprint(StartedJobRegistry('cq1', connection=r).count)",
        )?;
        let started: usize = started.trim().parse()?;
        assert!(started <= 2, "rq sees {started} started jobs");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(w.metric("mindora_worker_concurrency")?, Some(2.0));
    wait_for(T, "the registration meta to follow", || {
        Ok(consul
            .services()
            .values()
            .any(|s| s["Meta"]["concurrency"] == "2")
            .then_some(()))
    })?;

    // Queue list replaced: a new first lane is served before the backlog of cq1.
    consul.put("mindora/dev/worker/queues", "[\"cq2\",\"cq1\"]");
    w.wait_log(T, "config change applied", |l| {
        l["setting"] == "queues" && l["new"] == "cq2,cq1"
    })?;
    run_python(
        "3.0",
        &db,
        "Queue('cq2', connection=r).enqueue('mindora.echo', 1, job_id='pri')",
    )?;
    wait_statuses(&db, &["pri".into()], &["finished"], T)?;
    let backlog: usize = run_python("3.0", &db, "print(len(Queue('cq1', connection=r)))")?
        .trim()
        .parse()?;
    assert!(
        backlog > 0,
        "cq2 was served while cq1 still had {backlog} jobs waiting"
    );
    wait_for(T, "the registration tags to follow", || {
        Ok(consul
            .services()
            .values()
            .any(|s| {
                s["Tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "queue:cq2"))
            })
            .then_some(()))
    })?;
    no_violations(&consul);
    Ok(())
}
