//! rq 3.0's key prefix (`RQ_KEY_PREFIX`) and Redis Cluster: Python rq enqueues under a
//! prefix, mindora-worker with the same prefix runs every job and touches no key outside
//! it; rq 2.12 (no prefix support) keeps `rq`; on a real 3-master cluster with a hash-tagged
//! prefix, Python rq 3.0 enqueues through `RedisCluster` and the worker, seeded with another
//! node, runs the jobs, every key in one slot.

use std::process::Command;

use anyhow::Result;
use mindora_tests::cluster::RedisCluster;
use mindora_tests::python_rq::{checked, PythonRq};
use mindora_tests::{python, repo_root, worker_binary, RedisDb, WorkerProcess};

/// Starts the worker binary on `url` with `RQ_KEY_PREFIX` set in its environment.
fn worker_with_prefix(url: &str, name: &str, prefix: &str, args: &[&str]) -> Result<WorkerProcess> {
    WorkerProcess::spawn(url, name, args, &[("RQ_KEY_PREFIX", prefix)])
}

/// rq `version` on a leased database, its snippets run with `RQ_KEY_PREFIX=prefix`.
fn with_prefix(version: &'static str, prefix: &'static str) -> Result<PythonRq> {
    let mut rq = PythonRq::lease(version)?;
    rq.key_prefix = Some(prefix);
    Ok(rq)
}

/// Waits (in Python, through rq) until the 20 jobs `p0..p19` finished, then checks each
/// one's result. `CONN` is the snippet's rq connection.
const WAIT_AND_CHECK: &str = r#"
from rq.job import Job
deadline = time.time() + 60
while True:
    st = [Job.fetch(f"p{i}", connection=CONN).get_status() for i in range(20)]
    if all(s == "finished" for s in st) or time.time() > deadline:
        break
    time.sleep(0.2)
assert all(s == "finished" for s in st), st
for i in range(20):
    j = Job.fetch(f"p{i}", connection=CONN)
    assert j.return_value() == {"args": [i], "kwargs": {}}, (i, j.return_value())
"#;

#[test]
fn rq30_custom_prefix_runs_all_jobs_and_creates_no_rq_keys() -> Result<()> {
    let rq = with_prefix("3.0", "acme.v3")?;
    rq.enqueue(
        r#"
for i in range(20):
    q.enqueue("mindora.echo", i, job_id=f"p{i}")
assert r.exists("acme.v3:queue:default") and not r.exists("rq:queue:default")
"#,
    )?;
    let _w = worker_with_prefix(&rq.db.url(), "w-prefix", "acme.v3", &["--concurrency", "4"])?;
    rq.check(&format!(
        "CONN = r\n{WAIT_AND_CHECK}{}",
        r#"
from rq import Worker
from rq.registry import FinishedJobRegistry
assert [w.name for w in Worker.all(connection=r)] == ["w-prefix"], Worker.all(connection=r)
assert len(FinishedJobRegistry("default", connection=r)) == 20
stray = [k for k in r.keys("*") if not k.startswith(b"acme.v3:")]
assert stray == [], stray
assert r.keys("acme.v3:mindora:worker-lease:*") == [b"acme.v3:mindora:worker-lease:w-prefix"], r.keys("acme.v3:mindora:*")
"#
    ))?;
    Ok(())
}

#[test]
fn rq212_keeps_the_rq_prefix_and_mindora_keys_keep_their_names() -> Result<()> {
    // rq 2.12 has no prefix setting: whatever the environment says, its keys start `rq:`.
    let mut rq = with_prefix("2.12", "acme.v3")?;
    rq.enqueue(
        r#"
for i in range(20):
    q.enqueue("mindora.echo", i, job_id=f"p{i}")
assert r.exists("rq:queue:default")
"#,
    )?;
    let _w = WorkerProcess::start(
        &rq.db,
        "w-default",
        &["--concurrency", "4", "--rq-key-prefix", "rq"],
    )?;
    rq.key_prefix = Some("rq");
    rq.check(&format!(
        "CONN = r\n{WAIT_AND_CHECK}{}",
        r#"
stray = [k for k in r.keys("*") if not (k.startswith(b"rq:") or k.startswith(b"mindora:"))]
assert stray == [], stray
assert r.exists("mindora:worker-lease:w-default")
"#
    ))?;
    Ok(())
}

#[test]
fn python_pool_runners_use_the_worker_s_prefix_flag() -> Result<()> {
    let rq = with_prefix("3.0", "acme.v3")?;
    rq.enqueue(
        r#"
Queue("default", connection=r).enqueue("pytasks.progress", 3, job_id="meta", meta={"who": "py"})
"#,
    )?;
    // The flag alone (no RQ_KEY_PREFIX in the worker's environment): the runners must get it.
    let flags = ["--rq-key-prefix", "acme.v3", "--concurrency", "2"];
    let _w = rq.start_pool_worker("w-pool-prefix", 1, &flags)?;
    rq.check(
        r#"
from rq.job import Job
deadline = time.time() + 60
while Job.fetch("meta", connection=r).get_status() != "finished" and time.time() < deadline:
    time.sleep(0.2)
j = Job.fetch("meta", connection=r)
assert j.get_status() == "finished", (j.get_status(), j.exc_info)
assert j.return_value() == {"id": "meta", "origin": "default"}, j.return_value()
assert j.meta == {"who": "py", "step": 3}, j.meta
stray = [k for k in r.keys("*") if not k.startswith(b"acme.v3:")]
assert stray == [], stray
"#,
    )?;
    Ok(())
}

#[test]
fn an_rq_212_pool_refuses_a_prefix_it_cannot_honour() -> Result<()> {
    let db = RedisDb::lease()?;
    let out = Command::new(worker_binary()?)
        .args(["--redis-url", &db.url(), "--name", "w-pool-212", "--burst"])
        .args(["--rq-key-prefix", "acme.v3"])
        .args(mindora_tests::python_pool_args("2.12", 1)?)
        .env("RUST_LOG", "warn")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited {:?}", out.status);
    assert!(
        stderr.contains("RQ_KEY_PREFIX='acme.v3' but this rq (2.12"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[test]
fn an_invalid_prefix_stops_the_worker_with_rq_s_rule() -> Result<()> {
    let db = RedisDb::lease()?;
    let out = Command::new(worker_binary()?)
        .args(["--redis-url", &db.url(), "--name", "w-bad", "--burst"])
        .env("RQ_KEY_PREFIX", "acme/v3")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited {:?}", out.status);
    assert!(
        stderr.contains("invalid key prefix \"acme/v3\""),
        "stderr: {stderr}"
    );
    Ok(())
}

#[test]
fn redis_cluster_with_hash_tagged_prefix_runs_python_rq_30_jobs() -> Result<()> {
    let cluster = RedisCluster::start(3)?;
    let py = |code: &str| -> Result<String> {
        let out = Command::new(python("3.0")?)
            .env("RQ_KEY_PREFIX", "{rq}")
            .env("SEED", cluster.ports[0].to_string())
            .env("PYTHONPATH", repo_root().join("tests/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("-c")
            .arg(format!(
                "import os, time\nfrom rq import Queue\nfrom redis.cluster import RedisCluster\n\
                 CONN = RedisCluster(host='127.0.0.1', port=int(os.environ['SEED']))\n{code}"
            ))
            .output()?;
        checked(out, code)
    };
    py(r#"
q = Queue("default", connection=CONN)
for i in range(20):
    q.enqueue("mindora.echo", i, job_id=f"p{i}")
q.enqueue("pytasks.progress", 3, job_id="meta", meta={"who": "py"})
"#)?;
    // The SDK enqueues through the cluster client too (seeded with a third node).
    mindora_sdk::wire::keys::set_prefix("{rq}")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(mindora_sdk::Client::connect(&cluster.url(1)))?;
    let mut from_sdk = Vec::new();
    for i in 0..5 {
        let options = mindora_sdk::EnqueueOptions {
            job_id: Some(format!("s{i}")),
            ..Default::default()
        };
        from_sdk.push(rt.block_on(client.enqueue(
            "default",
            "mindora.echo",
            vec![serde_json::json!(i)],
            serde_json::Map::new(),
            options,
        ))?);
    }
    // Seeded with another node than Python's: the client learns the slot map itself. Its
    // Python pool's runner connects through redis-py's RedisCluster.
    let mut args = vec!["--concurrency".to_string(), "4".to_string()];
    args.extend(mindora_tests::python_pool_args("3.0", 1)?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _w = worker_with_prefix(&cluster.url(2), "w-cluster", "{rq}", &args)?;
    let out = py(&format!(
        "{WAIT_AND_CHECK}{}",
        r#"
deadline = time.time() + 60
while Job.fetch("meta", connection=CONN).get_status() != "finished" and time.time() < deadline:
    time.sleep(0.2)
j = Job.fetch("meta", connection=CONN)
assert j.get_status() == "finished", (j.get_status(), j.exc_info)
assert j.meta == {"who": "py", "step": 3}, j.meta
print("ok")
"#
    ))?;
    assert_eq!(out.trim(), "ok");
    for (i, job) in from_sdk.iter().enumerate() {
        let value = rt.block_on(client.wait(job, std::time::Duration::from_secs(30)))?;
        assert_eq!(
            value,
            serde_json::json!({"args": [i], "kwargs": {}}),
            "s{i}"
        );
    }

    let keys = cluster.all_keys()?;
    let stray: Vec<_> = keys
        .iter()
        .filter(|(_, k)| !k.starts_with("{rq}:"))
        .collect();
    assert!(stray.is_empty(), "keys outside the prefix: {stray:?}");
    let node = keys.first().map(|(p, _)| *p);
    assert!(
        keys.iter().all(|(p, _)| Some(*p) == node),
        "keys on several nodes: {keys:?}"
    );
    assert!(keys
        .iter()
        .any(|(_, k)| k == "{rq}:mindora:worker-lease:w-cluster"));

    // Without a hash tag the keys would spread over the slots: refused at start.
    let out = Command::new(worker_binary()?)
        .args(["--redis-url", &cluster.url(1), "--name", "w-untagged"])
        .env("RQ_KEY_PREFIX", "acme.v3")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited {:?}", out.status);
    assert!(stderr.contains("has no hash tag"), "stderr: {stderr}");

    // A plain redis:// URL to one node would meet MOVED for most slots: refused at start.
    let out = Command::new(worker_binary()?)
        .args([
            "--redis-url",
            &format!("redis://127.0.0.1:{}", cluster.ports[0]),
        ])
        .args(["--name", "w-plain"])
        .env("RQ_KEY_PREFIX", "{rq}")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited {:?}", out.status);
    assert!(
        stderr.contains("is a Redis Cluster node"),
        "stderr: {stderr}"
    );
    Ok(())
}
