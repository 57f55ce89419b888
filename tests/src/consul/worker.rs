//! A real `mindora-worker` process pointed at a [`super::FakeConsul`], with JSON logs captured
//! to a file and its `/metrics` scraped over loopback.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{free_port, http_get, http_request, wait_for, worker_binary, RedisDb, WorkerProcess};

/// A worker with Consul settings, JSON logs in a temp file and metrics on a free port.
pub struct ConsulWorker {
    /// The process (killed on drop).
    pub process: WorkerProcess,
    /// Metrics/health port.
    pub port: u16,
    log: std::path::PathBuf,
    _dir: TempDir,
}

/// A temp directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ConsulWorker {
    /// Starts a worker on `db` talking to Consul at `consul_addr`; `env` adds variables
    /// (`RUST_LOG` is left unset so the log level can come from Consul).
    pub fn start(
        db: &RedisDb,
        name: &str,
        consul_addr: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("mindora-consul-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir)?;
        let dir = TempDir(dir);
        let log = dir.0.join("worker.log");
        let port = free_port()?;
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(worker_binary()?);
        cmd.arg("--redis-url")
            .arg(db.url())
            .arg("--name")
            .arg(name)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("MINDORA_LOG_FORMAT", "json")
            .env("CONSUL_HTTP_ADDR", consul_addr)
            .env("MINDORA_CONSUL_ADVERTISE", "127.0.0.1")
            .env("MINDORA_CONSUL_RESYNC_SECS", "1")
            .env("MINDORA_CONSUL_CHECK_INTERVAL_SECS", "1")
            .env("MINDORA_CONSUL_WAIT_SECS", "2")
            // tracing writes to stdout; panics go to stderr: both land in the log file.
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting mindora-worker")?;
        Ok(ConsulWorker {
            process: WorkerProcess {
                child,
                name: name.to_string(),
            },
            port,
            log,
            _dir: dir,
        })
    }

    /// The log lines so far (JSON objects).
    pub fn logs(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The raw log text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line with `message` whose fields satisfy `pred`.
    pub fn wait_log(
        &self,
        timeout: Duration,
        message: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        wait_for(timeout, &format!("log {message:?}"), || {
            Ok(self
                .logs()
                .into_iter()
                .find(|l| l["message"] == message && pred(l)))
        })
        .with_context(|| format!("worker log:\n{}", self.log_text()))
    }

    /// A sample's value in `/metrics` (`name{labels}` exactly as rendered), if present.
    pub fn metric(&self, series: &str) -> Result<Option<f64>> {
        let text = http_get(self.port, "/metrics")?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    /// Waits until `series` satisfies `pred`.
    pub fn wait_metric(
        &self,
        timeout: Duration,
        series: &str,
        pred: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        wait_for(timeout, series, || {
            Ok(self.metric(series).ok().flatten().filter(|v| pred(*v)))
        })
        .with_context(|| format!("worker log:\n{}", self.log_text()))
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        http_request(self.port, "GET", "/readyz").is_ok_and(|(status, _)| status == 200)
    }
}
