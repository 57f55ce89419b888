//! Sentinel with everything a managed deployment turns on at once: TLS everywhere (mutual,
//! to the Sentinels and to the data nodes, replication included), Sentinels with their own
//! password (`requirepass`), and an ACL user on the master and replica (the default user
//! off). Private `redis-server` / Sentinel processes on loopback; the shared Redis is
//! untouched.
//!
//! - The worker finds the master with a `rediss+sentinel://` URL (flags for the files and
//!   the Sentinel password); the SDK with the flag form (`--redis-sentinels` ...).
//! - A master failover midway through the jobs: the worker follows it over TLS and every
//!   job finishes (prints the recovery time).
//! - Python rq functions run by the `--python` pool, whose processes reach the same
//!   deployment through Sentinel, TLS and ACL themselves; Python enqueues and reads back
//!   through the runner's own connection code.
//! - A wrong or missing Sentinel password and a wrong data-node password are clear errors.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mindora_sdk::connect::{RedisConnector, RedisSettings, SentinelSettings, TlsFiles};
use mindora_sdk::Client;
use mindora_tests::servers::{
    connect_error, enqueue_failover_jobs, free_port, redis_tls_config, spawn_worker, start_redis,
    start_sentinel_with, SentinelSecurity, TestPki, FAILOVER_WORKER_FLAGS,
};
use mindora_tests::{python, python_pool_args, repo_root};
use redis::AsyncCommands;

const MASTER: &str = "mindora-secure";
const USER: &str = "app";
const PASSWORD: &str = "data-pass";
const SENTINEL_PASSWORD: &str = "sentinel-pass";
const JOBS: usize = 600;

struct Deployment {
    _dir: tempfile::TempDir,
    pki: TestPki,
    master_port: u16,
    replica_port: u16,
    sentinels: [u16; 2],
    _daemons: Vec<mindora_tests::servers::Daemon>,
}

fn deploy() -> Result<Deployment> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path())?;
    let (m, r, s1, s2) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let acl = format!(
        "user default off\nuser {USER} on >{PASSWORD} ~* &* +@all\n\
         masteruser {USER}\nmasterauth {PASSWORD}\n"
    );
    let master = start_redis(
        dir.path(),
        "master",
        &format!("{}{acl}", redis_tls_config(&pki, m)),
        m,
    )?;
    let replica = start_redis(
        dir.path(),
        "replica",
        &format!(
            "{}{acl}replicaof 127.0.0.1 {m}\n",
            redis_tls_config(&pki, r)
        ),
        r,
    )?;
    let security = SentinelSecurity {
        tls: Some(&pki),
        requirepass: Some(SENTINEL_PASSWORD),
        data_auth: Some((USER, PASSWORD)),
    };
    let sentinel1 = start_sentinel_with(dir.path(), "sentinel1", s1, MASTER, m, &security)?;
    let sentinel2 = start_sentinel_with(dir.path(), "sentinel2", s2, MASTER, m, &security)?;
    Ok(Deployment {
        _dir: dir,
        pki,
        master_port: m,
        replica_port: r,
        sentinels: [s1, s2],
        _daemons: vec![master, replica, sentinel1, sentinel2],
    })
}

impl Deployment {
    fn tls(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.pki.ca.clone()),
            client_cert: Some(self.pki.client_cert.clone()),
            client_key: Some(self.pki.client_key.clone()),
        }
    }

    fn url(&self) -> String {
        format!(
            "rediss+sentinel://{USER}:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/{MASTER}/0",
            self.sentinels[0], self.sentinels[1]
        )
    }

    /// The flag form: Sentinels, master name and credentials as settings; the URL only
    /// says TLS and the database.
    fn flag_settings(&self) -> RedisSettings {
        RedisSettings {
            url: "rediss://127.0.0.1/0".into(),
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            tls: self.tls(),
            sentinel: SentinelSettings {
                addrs: self
                    .sentinels
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect(),
                master_name: Some(MASTER.into()),
                username: None,
                password: Some(SENTINEL_PASSWORD.into()),
            },
            ..Default::default()
        }
    }

    /// A direct TLS + ACL connection to one data node (to read its role).
    async fn node(&self, port: u16) -> Result<redis::aio::MultiplexedConnection> {
        let settings = RedisSettings {
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            tls: self.tls(),
            ..RedisSettings::from_url(format!("rediss://127.0.0.1:{port}/0"))
        };
        Ok(RedisConnector::new(&settings)?.multiplexed().await?)
    }

    /// A direct TLS connection to a Sentinel, with its password.
    async fn sentinel(&self, i: usize) -> Result<redis::aio::MultiplexedConnection> {
        let settings = RedisSettings {
            password: Some(SENTINEL_PASSWORD.into()),
            tls: self.tls(),
            ..RedisSettings::from_url(format!("rediss://127.0.0.1:{}", self.sentinels[i]))
        };
        Ok(RedisConnector::new(&settings)?.multiplexed().await?)
    }

    async fn role(&self, port: u16) -> Option<String> {
        let mut c = self.node(port).await.ok()?;
        let v: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
        v.first()
            .and_then(|r| redis::from_redis_value_ref::<String>(r).ok())
    }

    fn worker_flags(&self) -> Vec<String> {
        let p = |p: &std::path::Path| p.display().to_string();
        vec![
            "--redis-ca-file".into(),
            p(&self.pki.ca),
            "--redis-client-cert".into(),
            p(&self.pki.client_cert),
            "--redis-client-key".into(),
            p(&self.pki.client_key),
            "--redis-sentinel-password".into(),
            SENTINEL_PASSWORD.into(),
        ]
    }

    /// Runs Python (rq `version`) with the runner's connection code on its path and the
    /// worker's settings as `MINDORA_REDIS_*`; `r` is `mindora_runner.connection.connect()`.
    fn python(&self, version: &str, code: &str) -> Result<String> {
        let path =
            std::env::join_paths([repo_root().join("python"), repo_root().join("tests/python")])?;
        let out = Command::new(python(version)?)
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("MINDORA_REDIS_URL", self.url())
            .env("MINDORA_REDIS_CA_FILE", &self.pki.ca)
            .env("MINDORA_REDIS_CLIENT_CERT", &self.pki.client_cert)
            .env("MINDORA_REDIS_CLIENT_KEY", &self.pki.client_key)
            .env("MINDORA_REDIS_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
            .arg("-c")
            .arg(format!(
                "from mindora_runner.connection import connect\nfrom rq import Queue\n\
                 from rq.job import Job\nr = connect()\n{code}"
            ))
            .output()?;
        if !out.status.success() {
            bail!(
                "python failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

async fn zcard(c: &mut mindora_sdk::RedisConn, key: &str) -> Result<i64> {
    Ok(c.zcard(key).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sentinel_auth_and_acl_through_a_failover() -> Result<()> {
    let d = deploy()?;
    // The SDK (flag form) and a following connection for the test's own reads.
    let connector = RedisConnector::new(&d.flag_settings())?;
    let client = Client::connect_with(&connector).await?;
    let mut reads = connector
        .manager(&mindora_sdk::connect::ManagerOptions::default())
        .await?;

    // 600 jobs of 0.1 s on 4 slots: ~15 s of work, most of it left when the failover is sent.
    let ids = enqueue_failover_jobs(&client, JOBS, 0.1).await?;
    let mut flags = d.worker_flags();
    flags.extend(FAILOVER_WORKER_FLAGS.map(String::from));
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();

    // The Sentinels must see a healthy replica before they can fail over.
    let mut s = d.sentinel(0).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER)
            .query_async(&mut s)
            .await?;
        if replicas.iter().any(|r| {
            r.get("flags").is_some_and(|f| f == "slave")
                && r.get("master-link-status").is_some_and(|l| l == "ok")
        }) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Sentinels never saw the replica: {replicas:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Started only now, so the Sentinels' wait above does not eat the work.
    let mut worker = spawn_worker(&d.url(), "w-secure-sentinel", &flag_refs)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while zcard(&mut reads, "rq:finished:default").await? < 100 {
        anyhow::ensure!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = zcard(&mut reads, "rq:finished:default").await?;
    let left: i64 = reads.llen("rq:queue:default").await?;
    anyhow::ensure!(
        left > 0,
        "all jobs finished before the failover: the run measures nothing (make the work longer)"
    );

    let t0 = Instant::now();
    loop {
        let r: redis::RedisResult<String> = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query_async(&mut s)
            .await;
        match r {
            Ok(_) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                eprintln!("SENTINEL FAILOVER not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("SENTINEL FAILOVER: {e}"),
        }
    }
    let sent = Instant::now();
    let mut promoted = None;
    let mut base: i64 = 0;
    let resumed = loop {
        anyhow::ensure!(
            sent.elapsed() < Duration::from_secs(60),
            "no progress on the new master within 60 s"
        );
        if promoted.is_none() && d.role(d.replica_port).await.as_deref() == Some("master") {
            promoted = Some(sent.elapsed());
            base = d
                .node(d.replica_port)
                .await?
                .zcard("rq:finished:default")
                .await?;
        }
        if promoted.is_some() {
            let now: i64 = d
                .node(d.replica_port)
                .await?
                .zcard("rq:finished:default")
                .await?;
            if now > base {
                break sent.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let promoted = promoted.context("promotion")?;
    let mut new_master = d.node(d.replica_port).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let drained = loop {
        let finished: i64 = new_master.zcard("rq:finished:default").await?;
        let queued: i64 = new_master.llen("rq:queue:default").await?;
        let started: i64 = new_master.zcard("rq:wip:default").await?;
        let scheduled: i64 = new_master.zcard("rq:scheduled:default").await?;
        if finished == JOBS as i64 && queued == 0 && started == 0 && scheduled == 0 {
            break sent.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not drained: finished {finished}, queued {queued}, started {started}, scheduled {scheduled}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The SDK followed too: every job's status, read through Sentinel.
    for id in &ids {
        let st = client.status(id).await?;
        anyhow::ensure!(st.to_string() == "finished", "job {id} is {st}");
    }
    let failed: i64 = new_master.zcard("rq:failed:default").await?;
    assert_eq!(failed, 0, "no job failed");
    assert!(
        d.role(d.master_port).await.as_deref() != Some("master"),
        "the old master was demoted"
    );
    assert!(worker.alive(), "the worker survived the failover");
    eprintln!(
        "FIGURES sentinel-failover-tls: TLS + Sentinel auth + ACL, {JOBS} jobs, {before} done \
         before SENTINEL FAILOVER; replica promoted after {:.2} s; worker finishing jobs on \
         the new master after {:.2} s; all {JOBS} finished {:.1} s after the failover",
        promoted.as_secs_f64(),
        resumed.as_secs_f64(),
        drained.as_secs_f64()
    );
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_rq_functions_through_tls_sentinel_and_acl() -> Result<()> {
    let d = deploy()?;
    let version = "3.0";
    d.python(
        version,
        r#"
q = Queue("default", connection=r)
q.enqueue("pytasks.add", 2, y=40, job_id="py-add")
q.enqueue("pytasks.progress", 3, job_id="py-meta")
"#,
    )?;
    let mut args = python_pool_args(version, 1)?;
    args.extend(d.worker_flags());
    args.push("--burst".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = spawn_worker(&d.url(), "w-secure-python", &refs)?;
    let status = worker.wait_exit(Duration::from_secs(90))?;
    anyhow::ensure!(status.success(), "worker exited with {status}");
    let out = d.python(
        version,
        r#"
a = Job.fetch("py-add", connection=r)
assert a.get_status() == "finished" and a.return_value() == {"sum": 42}, (a.get_status(), a.return_value())
m = Job.fetch("py-meta", connection=r)
assert m.get_meta() == {"step": 3}, m.get_meta()
print("ok")
"#,
    )?;
    assert_eq!(out.trim(), "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_sentinel_or_data_credentials_are_clear_errors() -> Result<()> {
    let d = deploy()?;
    assert_eq!(
        connect_error(d.flag_settings()).await?,
        None,
        "good settings"
    );
    let mut wrong = d.flag_settings();
    wrong.sentinel.password = Some("nope".into());
    let err = connect_error(wrong)
        .await?
        .context("wrong Sentinel password")?;
    eprintln!("wrong Sentinel password: {err}");
    let mut missing = d.flag_settings();
    missing.sentinel.password = None;
    let err = connect_error(missing)
        .await?
        .context("no Sentinel password")?;
    eprintln!("no Sentinel password: {err}");
    let mut wrong_data = d.flag_settings();
    wrong_data.password = Some("nope".into());
    let err = connect_error(wrong_data)
        .await?
        .context("wrong data password")?;
    assert!(
        err.contains("WRONGPASS") || err.to_lowercase().contains("auth"),
        "{err}"
    );
    Ok(())
}
