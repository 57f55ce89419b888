//! Redis ACL users and missing credentials, on a private `redis-server` (default user off;
//! the shared Redis is untouched):
//!
//! - a user without `mindora:*` stops the worker at once, non-zero, naming the denied key
//!   and the ACL rule that allows it (the rule is taken from that message);
//! - a user with exactly that rule (and the same rule in `docs/scaling.md`) runs jobs
//!   enqueued by Python rq end to end, built-ins and Python functions of the `--python`
//!   pool, whose runners use the same user;
//! - no credentials at all stop the worker at once, naming `NOAUTH`.

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mindora_tests::servers::{free_port, start_redis};
use mindora_tests::{python, python_pool_args, repo_root, worker_binary, RQ_VERSIONS};

/// Runs the worker to its exit (killed and failed after `limit`); its status and output
/// (logs and the exit error).
fn run_worker(
    url: &str,
    name: &str,
    args: &[String],
    limit: Duration,
) -> Result<(ExitStatus, String)> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("output");
    let out = std::fs::File::create(&log)?;
    let mut child = Command::new(worker_binary()?)
        .arg("--redis-url")
        .arg(url)
        .arg("--name")
        .arg(name)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting mindora-worker")?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "worker {name} still running after {limit:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status, std::fs::read_to_string(&log)?))
}

fn acl(conn: &mut redis::Connection, args: &[&str]) -> Result<()> {
    redis::cmd("ACL").arg(args).exec(conn)?;
    Ok(())
}

#[test]
fn acl_rule_is_enough_and_missing_rights_stop_the_worker() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let _redis = start_redis(
        dir.path(),
        "acl",
        &format!("port {port}\nuser default off\nuser admin on >adminpw ~* &* +@all\n"),
        port,
    )?;
    let admin_url = format!("redis://admin:adminpw@127.0.0.1:{port}/0");
    let mut admin = redis::Client::open(admin_url.as_str())?.get_connection()?;
    let url_for = |user: &str| format!("redis://{user}:pw@127.0.0.1:{port}/0");
    let queues = vec!["--queues".to_string(), "acl".to_string()];

    // No credentials: the default user is off.
    let (status, err) = run_worker(
        &format!("redis://127.0.0.1:{port}/0"),
        "acl-anon",
        &queues,
        Duration::from_secs(30),
    )?;
    assert!(!status.success(), "exited {status}:\n{err}");
    assert!(err.contains("NOAUTH") && err.contains("ERROR"), "{err}");

    // rq's keys and channels only, as docs/scaling.md used to say.
    acl(
        &mut admin,
        &[
            "SETUSER",
            "rq-only",
            "on",
            ">pw",
            "~rq:*",
            "&rq:pubsub:*",
            "+@all",
        ],
    )?;
    let (status, err) = run_worker(
        &url_for("rq-only"),
        "acl-rq-only",
        &queues,
        Duration::from_secs(30),
    )?;
    assert!(!status.success(), "exited {status}:\n{err}");
    assert!(
        err.contains("ERROR") && err.contains("mindora:worker-lease:acl-rq-only"),
        "{err}"
    );
    let rule = err
        .split('`')
        .nth(1)
        .with_context(|| format!("no ACL rule in the message:\n{err}"))?
        .to_string();
    let docs = std::fs::read_to_string(repo_root().join("docs/scaling.md"))?;
    assert!(
        docs.contains(&rule),
        "docs/scaling.md lacks the rule {rule}"
    );

    // Exactly that rule: Python rq enqueues (as admin), the worker runs everything.
    let mut setuser = vec!["SETUSER", "mindora-worker-app", "reset", "on", ">pw"];
    setuser.extend(rule.split_whitespace());
    acl(&mut admin, &setuser)?;
    for version in RQ_VERSIONS {
        let out = Command::new(python(version)?)
            .env("REDIS_URL", &admin_url)
            .arg("-c")
            .arg(
                "import os, redis\nfrom rq import Queue\n\
                 q = Queue('acl', connection=redis.Redis.from_url(os.environ['REDIS_URL']))\n\
                 ids = [q.enqueue('mindora.echo', i).id for i in range(10)]\n\
                 ids += [q.enqueue('pytasks.progress', 3).id for _ in range(3)]\n\
                 print(' '.join(ids))\n",
            )
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids: Vec<String> = String::from_utf8(out.stdout)?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut args = queues.clone();
        args.push("--burst".into());
        args.extend(python_pool_args(version, 1)?);
        let (status, err) = run_worker(
            &url_for("mindora-worker-app"),
            &format!("acl-app-{}", version.replace('.', "")),
            &args,
            Duration::from_secs(90),
        )?;
        assert!(status.success(), "exited {status}:\n{err}");
        assert!(!err.contains("NOPERM"), "{err}");
        for id in &ids {
            let st: Option<String> = redis::cmd("HGET")
                .arg(format!("rq:job:{id}"))
                .arg("status")
                .query(&mut admin)?;
            assert_eq!(
                st.as_deref(),
                Some("finished"),
                "job {id} (rq {version}):\n{err}"
            );
        }
    }
    Ok(())
}
