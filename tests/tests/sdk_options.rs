//! The SDK's rq options `rate_limit`, `repeat` and `webhooks`: the job hash holds the same
//! bytes Python rq 2.12 / 3.0 write for the same options, Python reads them back, and the
//! jobs behave as rq's under a real Python `rq worker` and under mindora-worker (a Repeat
//! runs 1 + times, webhooks arrive at a local HTTP server, a RateLimit holds jobs back).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mindora_sdk::{
    Client, EnqueueOptions, EnqueuedJob, JobStatus, RateLimit, Repeat, Webhook, WebhookMethod,
    WebhookStatus,
};
use mindora_tests::hook_server::HookServer;
use mindora_tests::{
    python_command, run_python, wait_for, wait_statuses, RedisDb, WorkerProcess, RQ_VERSIONS,
};
use redis::Commands;
use serde_json::{json, Map};

const T: Duration = Duration::from_secs(30);

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn enqueue(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    function: &str,
    opts: EnqueueOptions,
) -> Result<EnqueuedJob> {
    Ok(rt.block_on(client.enqueue("default", function, vec![json!(1)], Map::new(), opts))?)
}

fn post_hook(url: String, status: WebhookStatus) -> Webhook {
    Webhook {
        method: WebhookMethod::Post,
        headers: Some(vec![
            ("X-Token".into(), "s3cr3t".into()),
            ("X-Zone".into(), "eu".into()),
        ]),
        timeout_secs: 5,
        ..Webhook::new(url, status)
    }
}

fn field(conn: &mut redis::Connection, id: &str, f: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn.hget(format!("rq:job:{id}"), f)?)
}

#[test]
fn option_fields_are_the_bytes_python_rq_writes_and_python_reads_them() -> Result<()> {
    let rt = rt()?;
    for &version in RQ_VERSIONS {
        let db = RedisDb::lease()?;
        let client = rt.block_on(Client::connect(&db.url()))?;
        let url = "http://127.0.0.1:9/h".to_string();
        let rl = (version == "3.0").then(|| RateLimit {
            key: "sdk-k".into(),
            concurrency: 2,
        });
        enqueue(
            &rt,
            &client,
            "jobs.echo",
            EnqueueOptions {
                job_id: Some("rust".into()),
                repeat: Some(Repeat::with_intervals(3, vec![1, 2])),
                webhooks: vec![
                    // A non-ASCII value: rq's json.dumps writes it as \u escapes.
                    Webhook {
                        headers: Some(vec![
                            ("X-Token".into(), "s3cr3t".into()),
                            ("X-Zone".into(), "zürich".into()),
                        ]),
                        ..post_hook(url.clone(), WebhookStatus::Failed)
                    },
                    Webhook::new(url.clone(), WebhookStatus::Finished),
                ],
                rate_limit: rl,
                ..Default::default()
            },
        )?;
        let rl_py = if version == "3.0" {
            ", rate_limit=RateLimit('sdk-k', 2)"
        } else {
            ""
        };
        let import_rl = if version == "3.0" {
            "from rq import RateLimit"
        } else {
            ""
        };
        run_python(
            version,
            &db,
            &format!(
                r#"
from rq import Repeat, Webhook
{import_rl}
hooks = [Webhook("{url}", "failed", method="POST", headers={{"X-Token": "s3cr3t", "X-Zone": "zürich"}}, timeout=5),
         Webhook("{url}", "finished")]
Queue("default", connection=r).enqueue("jobs.echo", 1, job_id="py", repeat=Repeat(times=3, interval=[1, 2]), webhooks=hooks{rl_py})
"#
            ),
        )?;
        let mut conn = db.conn()?;
        let mut names = vec!["repeats_left", "repeat_intervals", "webhooks", "status"];
        if version == "3.0" {
            names.extend(["rate_limit_key", "rate_limit_concurrency"]);
        }
        for f in names {
            let ours = field(&mut conn, "rust", f)?;
            let theirs = field(&mut conn, "py", f)?;
            ensure!(theirs.is_some(), "rq {version} wrote no {f}");
            ensure!(
                ours == theirs,
                "rq {version}: field {f}: ours {:?} vs rq's {:?}",
                ours.map(|b| String::from_utf8_lossy(&b).into_owned()),
                theirs.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
        let rl_check = if version == "3.0" {
            r#"
from rq.rate_limit import RateLimitRegistry
assert j.rate_limit_key == "sdk-k" and j.rate_limit_concurrency == 2
reg = RateLimitRegistry("sdk-k", connection=r)
assert sorted(reg.get_allowed_job_ids()) == ["py", "rust"], reg.get_allowed_job_ids()
assert reg.concurrency == 2"#
        } else {
            ""
        };
        let out = run_python(
            version,
            &db,
            &format!(
                r#"
from rq.job import Job
j = Job.fetch("rust", connection=r)
assert j.repeats_left == 3 and j.repeat_intervals == [1, 2], (j.repeats_left, j.repeat_intervals)
w = j.webhooks
assert [x.job_status for x in w] == ["failed", "finished"], w
assert w[0].method == "POST" and w[0].headers == {{"X-Token": "s3cr3t", "X-Zone": "zürich"}} and w[0].timeout == 5
assert w[1].method == "GET" and w[1].headers is None and w[1].timeout == 10
{rl_check}
print("ok")
"#
            ),
        )?;
        ensure!(out.trim() == "ok", "rq {version}: {out}");
    }
    Ok(())
}

/// A Python `rq worker --burst` (SimpleWorker) on `default`.
fn python_burst(version: &str, db: &RedisDb) -> Result<()> {
    let out = python_command(version, db)?
        .args([
            "-m",
            "rq.cli",
            "worker",
            "--burst",
            "-w",
            "rq.worker.SimpleWorker",
            "--url",
        ])
        .arg(db.url())
        .arg("default")
        .output()?;
    ensure!(
        out.status.success(),
        "rq worker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn sdk_repeat_webhooks_and_rate_limit_run_on_python_rq() -> Result<()> {
    let rt = rt()?;
    let hooks = HookServer::start()?;
    for &version in RQ_VERSIONS {
        let db = RedisDb::lease()?;
        let client = rt.block_on(Client::connect(&db.url()))?;
        let tag = version.replace('.', "");
        enqueue(
            &rt,
            &client,
            "jobs.echo",
            EnqueueOptions {
                job_id: Some("rep".into()),
                repeat: Some(Repeat::new(2)),
                ..Default::default()
            },
        )?;
        enqueue(
            &rt,
            &client,
            "jobs.boom",
            EnqueueOptions {
                job_id: Some("hooked".into()),
                webhooks: vec![post_hook(
                    hooks.url(&format!("/py{tag}/failed")),
                    WebhookStatus::Failed,
                )],
                ..Default::default()
            },
        )?;
        let limited = if version == "3.0" { 4 } else { 0 };
        for i in 0..limited {
            let j = enqueue(
                &rt,
                &client,
                "jobs.echo",
                EnqueueOptions {
                    job_id: Some(format!("rl{i}")),
                    rate_limit: Some(RateLimit {
                        key: "py-k".into(),
                        concurrency: 1,
                    }),
                    ..Default::default()
                },
            )?;
            let want = if i == 0 {
                JobStatus::Queued
            } else {
                JobStatus::RateLimited
            };
            ensure!(j.status == want, "rl{i}: {:?}", j.status);
        }
        python_burst(version, &db)?;
        let mut conn = db.conn()?;
        let runs: i64 = redis::cmd("XLEN").arg("rq:results:rep").query(&mut conn)?;
        ensure!(
            runs == 3,
            "rq {version}: Repeat(times=2) ran {runs} times, not 3"
        );
        let ids: Vec<String> = (0..limited).map(|i| format!("rl{i}")).collect();
        wait_statuses(&db, &ids, &["finished"], T)?;
        let got = wait_for(T, "the failed webhook", || {
            Ok(hooks
                .requests()
                .into_iter()
                .find(|r| r.path == format!("/py{tag}/failed")))
        })?;
        let body: serde_json::Value = serde_json::from_str(&got.body)?;
        ensure!(
            body["job_id"] == "hooked"
                && body["status"] == "failed"
                && body["func_name"] == "jobs.boom",
            "rq {version}: {body}"
        );
        ensure!(got.headers.get("x-token").map(String::as_str) == Some("s3cr3t"));
    }
    Ok(())
}

#[test]
fn sdk_repeat_webhooks_and_rate_limit_run_on_mindora_worker() -> Result<()> {
    let rt = rt()?;
    let hooks = HookServer::start()?;
    let db = RedisDb::lease()?;
    let client = rt.block_on(Client::connect(&db.url()))?;
    enqueue(
        &rt,
        &client,
        "mindora.echo",
        EnqueueOptions {
            job_id: Some("rep".into()),
            repeat: Some(Repeat::with_intervals(2, vec![1])),
            webhooks: vec![post_hook(
                hooks.url("/ours/finished"),
                WebhookStatus::Finished,
            )],
            ..Default::default()
        },
    )?;
    let ids: Vec<String> = (0..8).map(|i| format!("rl{i}")).collect();
    for id in &ids {
        enqueue(
            &rt,
            &client,
            "mindora.sleep",
            EnqueueOptions {
                job_id: Some(id.clone()),
                rate_limit: Some(RateLimit {
                    key: "ours-k".into(),
                    concurrency: 2,
                }),
                ..Default::default()
            },
        )?;
    }
    let _w = WorkerProcess::start(&db, "w-sdk-options", &["--concurrency", "8"])?;
    let mut conn = db.conn()?;
    // Never more than 2 of the key running, sampled until all 8 are done.
    let mut most = 0usize;
    wait_for(T, "all rate-limited jobs finished", || {
        let mut running = 0;
        let mut finished = 0;
        for id in &ids {
            match conn.hget::<_, _, Option<String>>(format!("rq:job:{id}"), "status")? {
                Some(s) if s == "started" => running += 1,
                Some(s) if s == "finished" => finished += 1,
                _ => {}
            }
        }
        most = most.max(running);
        Ok((finished == ids.len()).then_some(()))
    })?;
    ensure!(most <= 2, "{most} jobs of RateLimit(key, 2) ran at once");
    wait_for(T, "3 runs of the repeated job", || {
        let n: i64 = redis::cmd("XLEN").arg("rq:results:rep").query(&mut conn)?;
        Ok((n == 3).then_some(()))
    })?;
    wait_statuses(&db, &["rep".to_string()], &["finished"], T)?;
    let sent = wait_for(T, "a finished webhook per run", || {
        let n = hooks
            .requests()
            .iter()
            .filter(|r| r.path == "/ours/finished")
            .count();
        Ok((n == 3).then_some(n))
    })?;
    let left: Option<String> = conn.hget("rq:job:rep", "repeats_left")?;
    ensure!(left.as_deref() == Some("0"), "repeats_left {left:?}");
    let r = hooks
        .requests()
        .into_iter()
        .find(|r| r.path == "/ours/finished")
        .context("no webhook")?;
    ensure!(r.method == "POST" && r.headers.get("x-zone").map(String::as_str) == Some("eu"));
    eprintln!("Repeat(2, [1]) from the SDK: 3 runs, {sent} webhooks; at most {most} of RateLimit(k, 2) at once");
    Ok(())
}
