//! Test support for the interop suites: every test leases its own Redis database (so
//! tests run in parallel and twice in a row), runs real Python `rq` from pinned venvs, and
//! starts real `mindora-worker` processes.

pub mod amqp;
pub mod cgroup;
pub mod cluster;
pub mod consul;
pub mod hook_server;
pub mod otlp;
pub mod python_rq;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use redis::Commands;

/// Private TLS / Sentinel / RabbitMQ servers and a test CA.
pub mod servers;

#[cfg(feature = "pipelines")]
pub mod pipelines;

/// The rq versions every interop test runs against (wire-compatible with each other).
pub const RQ_VERSIONS: &[&str] = &["2.12", "3.0"];

/// Where `.ci/run` puts venvs and other caches.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MINDORA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/mindora")
        })
}

/// The Python interpreter of the venv with rq `version` (made by `tests/setup-python.sh`).
pub fn python(version: &str) -> Result<PathBuf> {
    let p = cache_dir()
        .join(format!("venv-rq{}", version.replace('.', "")))
        .join("bin/python");
    if !p.exists() {
        bail!(
            "{} is missing: run `bash tests/setup-python.sh` (or .ci/run) first",
            p.display()
        );
    }
    Ok(p)
}

/// The repo root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `mindora-worker` binary built next to this test binary.
pub fn worker_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let bin = dir.join("mindora-worker");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p mindora-worker-app --bin mindora-worker` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// The PostgreSQL database tests use (each test works in a schema of its own).
pub fn postgres_url() -> String {
    std::env::var("MINDORA_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis server tests use.
pub fn redis_base() -> String {
    std::env::var("MINDORA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis database leased to one test: flushed on lease and on release.
pub struct RedisDb {
    /// Database number (1..=15).
    pub db: u32,
    lease_key: String,
    token: String,
}

impl RedisDb {
    /// Leases a free database, waiting for one if all are taken.
    pub fn lease() -> Result<Self> {
        let client = redis::Client::open(format!("{}/0", redis_base()))?;
        let mut conn = client.get_connection()?;
        let token = format!("{}-{}", std::process::id(), uuid_like());
        let started = Instant::now();
        loop {
            for db in 1..=15u32 {
                let lease_key = format!("mindora:test-db-lease:{db}");
                let ok: Option<String> = redis::cmd("SET")
                    .arg(&lease_key)
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(600)
                    .query(&mut conn)?;
                if ok.is_some() {
                    let leased = RedisDb {
                        db,
                        lease_key,
                        token,
                    };
                    leased.flush()?;
                    return Ok(leased);
                }
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("no free Redis database for 300 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `redis://.../<db>`.
    pub fn url(&self) -> String {
        format!("{}/{}", redis_base(), self.db)
    }

    /// A sync connection to the database.
    pub fn conn(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    /// The SDK's reconnecting async connection to the database (what the worker and the
    /// console use).
    pub async fn sdk_conn(&self) -> Result<mindora_sdk::RedisConn> {
        let connector = mindora_sdk::RedisConnector::from_url(&self.url())?;
        Ok(connector
            .manager(&mindora_sdk::connect::ManagerOptions::default())
            .await?)
    }

    fn flush(&self) -> Result<()> {
        redis::cmd("FLUSHDB").exec(&mut self.conn()?)?;
        Ok(())
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        let _ = self.flush();
        if let Ok(client) = redis::Client::open(format!("{}/0", redis_base())) {
            if let Ok(mut conn) = client.get_connection() {
                let held: Option<String> = conn.get(&self.lease_key).ok();
                if held.as_deref() == Some(self.token.as_str()) {
                    let _: redis::RedisResult<i64> = conn.del(&self.lease_key);
                }
            }
        }
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}")
}

/// What every snippet starts with: `r` is a connection to the test's own database.
pub const PYTHON_PRELUDE: &str = "import os, time\nimport redis\nfrom rq import Queue\nr = redis.Redis.from_url(os.environ['REDIS_URL'])\n";

/// Runs a Python snippet with rq `version` after [`PYTHON_PRELUDE`]; `REDIS_URL` is set to
/// the leased database and `tests/python` is importable. Fails with the script's output when
/// it fails.
pub fn run_python(version: &str, db: &RedisDb, code: &str) -> Result<String> {
    let out = python_command(version, db)?
        .arg("-c")
        .arg(format!("{PYTHON_PRELUDE}{code}"))
        .output()
        .context("starting python")?;
    check(out, code)
}

/// A `python` command prepared like [`run_python`]'s.
pub fn python_command(version: &str, db: &RedisDb) -> Result<Command> {
    let mut cmd = Command::new(python(version)?);
    cmd.env("REDIS_URL", db.url())
        .env("PYTHONPATH", repo_root().join("tests/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Ok(cmd)
}

fn check(out: Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "python failed ({}):\n--- script\n{what}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A running `mindora-worker` process, killed on drop.
pub struct WorkerProcess {
    /// The child process.
    pub child: Child,
    /// Its worker name.
    pub name: String,
}

impl WorkerProcess {
    /// Starts a worker on `db` with extra CLI args.
    pub fn start(db: &RedisDb, name: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(&db.url(), name, args, &[])
    }

    /// Starts a worker on any Redis URL with extra CLI args and environment variables (logs at
    /// warn to stderr).
    pub fn spawn(
        redis_url: &str,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let child = Command::new(worker_binary()?)
            .arg("--redis-url")
            .arg(redis_url)
            .arg("--name")
            .arg(name)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mindora-worker")?;
        Ok(WorkerProcess {
            child,
            name: name.to_string(),
        })
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{sig} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                bail!("worker {} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job's status field.
pub fn status(conn: &mut redis::Connection, job_id: &str) -> Result<Option<String>> {
    Ok(conn.hget(format!("rq:job:{job_id}"), "status")?)
}

/// Job ids as [`wait_statuses`] and friends take them.
pub fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until every job id has one of `statuses`.
pub fn wait_statuses(
    db: &RedisDb,
    ids: &[String],
    statuses: &[&str],
    timeout: Duration,
) -> Result<()> {
    let mut conn = db.conn()?;
    wait_for(
        timeout,
        &format!("{} jobs to reach {statuses:?}", ids.len()),
        || {
            for id in ids {
                let s = status(&mut conn, id)?;
                if !s.as_deref().is_some_and(|s| statuses.contains(&s)) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
}

/// Exactly-once across a fleet: the workers' `successful_job_count`s add up to the number of
/// jobs, and every job's result stream holds a single entry.
pub fn assert_each_ran_once(db: &RedisDb, ids: &[String], workers: &[WorkerProcess]) -> Result<()> {
    let mut conn = db.conn()?;
    let mut per_worker = Vec::new();
    for w in workers {
        let c: Option<i64> = conn.hget(format!("rq:worker:{}", w.name), "successful_job_count")?;
        per_worker.push((w.name.clone(), c.unwrap_or(0)));
    }
    let total: i64 = per_worker.iter().map(|(_, c)| c).sum();
    if total != ids.len() as i64 {
        bail!(
            "{total} successful runs for {} jobs: {per_worker:?}",
            ids.len()
        );
    }
    for id in ids {
        let runs: i64 = redis::cmd("XLEN")
            .arg(format!("rq:results:{id}"))
            .query(&mut conn)?;
        if runs != 1 {
            bail!("{id} ran {runs} times");
        }
    }
    Ok(())
}

/// `mindora-worker` flags that turn on the `--python` pool with rq `version`'s venv, the
/// runner from `python/` and the test tasks from `tests/python` on its path.
pub fn python_pool_args(version: &str, processes: usize) -> Result<Vec<String>> {
    let path =
        std::env::join_paths([repo_root().join("python"), repo_root().join("tests/python")])?;
    Ok(vec![
        "--python".into(),
        "--python-interpreter".into(),
        python(version)?.display().to_string(),
        "--python-path".into(),
        path.to_string_lossy().into_owned(),
        "--python-processes".into(),
        processes.to_string(),
    ])
}

/// A loopback TCP port free right now (for a server a test starts).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One client for every loopback HTTP call of the tests (connection reuse, one timeout).
fn http_client() -> Result<&'static reqwest::blocking::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    Ok(CLIENT.get_or_init(|| c))
}

/// A request without a body to `127.0.0.1:port`; the status code and the body.
pub fn http_request(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let reply = http_client()?
        .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
        .send()
        .with_context(|| format!("{method} {path} on port {port}"))?;
    let status = reply.status().as_u16();
    Ok((status, reply.text()?))
}

/// The body of a GET that answered 2xx (any other status is an error naming it).
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let (status, body) = http_request(port, "GET", path)?;
    if !(200..300).contains(&status) {
        bail!("GET {path} on port {port}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// The body of a 2xx response, parsed as JSON.
pub fn http_json(port: u16, method: &str, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http_request(port, method, path)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} on port {port}: HTTP {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{method} {path}: {body}"))
}

/// A program of the rq monitoring tools venv (`venv-rqtools`: rq-dashboard,
/// rq-exporter), made by `tests/setup-python.sh`.
pub fn rq_tool(name: &str) -> Result<PathBuf> {
    let p = cache_dir().join("venv-rqtools/bin").join(name);
    if !p.exists() {
        bail!("{} missing: run `bash tests/setup-python.sh`", p.display());
    }
    Ok(p)
}

/// Whether to run the measured throughput passes and print their figures
/// (`MINDORA_FIGURES=1`, set by `tests/scale/bench.sh`): the test suite itself only checks
/// that the same paths work, on fewer jobs, and prints nothing.
pub fn figures_wanted() -> bool {
    std::env::var_os("MINDORA_FIGURES").is_some_and(|v| v == "1")
}
