//! The shape most interop tests share: Python rq enqueues into a leased database, a
//! `mindora-worker` runs the jobs, Python reads the outcomes back with rq itself and asserts.
//! [`PythonRq`] holds the rq version and the database so that a test states only its
//! snippets; [`PythonRq::each_version`] repeats a test for every rq of [`RQ_VERSIONS`].

use std::process::Output;

use anyhow::{ensure, Context, Result};

use crate::{
    python_command, python_pool_args, RedisDb, WorkerProcess, PYTHON_PRELUDE, RQ_VERSIONS,
};

/// Put before [`PythonRq::enqueue`]'s and [`PythonRq::check`]'s snippets (after
/// [`crate::PYTHON_PRELUDE`]): `q` is the `default` queue most tests use.
pub const DEFAULT_QUEUE: &str = "q = Queue(\"default\", connection=r)\n";

/// Worker flags that find a dead worker's jobs within seconds: rq's abandon grace, the
/// heartbeat and the recovery scan shortened (the crash tests add `--concurrency`).
pub const FAST_RECOVERY: &[&str] = &[
    "--abandon-grace-secs",
    "2",
    "--heartbeat-secs",
    "1",
    "--recover-every-secs",
    "1",
];

/// Python rq `version` against a database of its own.
pub struct PythonRq {
    /// The rq version of the venv the snippets run in (one of [`RQ_VERSIONS`]).
    pub version: &'static str,
    /// The leased database (`r` in the snippets).
    pub db: RedisDb,
    /// `RQ_KEY_PREFIX` of the snippets (rq 3.0's key prefix); unset when `None`.
    pub key_prefix: Option<&'static str>,
}

impl PythonRq {
    /// rq `version` on a newly leased database.
    pub fn lease(version: &'static str) -> Result<Self> {
        Ok(PythonRq {
            version,
            db: RedisDb::lease()?,
            key_prefix: None,
        })
    }

    /// One per rq version of [`RQ_VERSIONS`], each on a database of its own, leased when
    /// the loop reaches it (so one database is held at a time).
    pub fn each_version() -> impl Iterator<Item = Result<Self>> {
        RQ_VERSIONS.iter().map(|version| Self::lease(version))
    }

    /// Runs a snippet after [`PYTHON_PRELUDE`] as [`crate::run_python`] does (with
    /// `RQ_KEY_PREFIX` when [`Self::key_prefix`] is set); returns what it printed.
    pub fn run(&self, code: &str) -> Result<String> {
        let mut cmd = python_command(self.version, &self.db)?;
        if let Some(prefix) = self.key_prefix {
            cmd.env("RQ_KEY_PREFIX", prefix);
        }
        let out = cmd
            .arg("-c")
            .arg(format!("{PYTHON_PRELUDE}{code}"))
            .output()
            .context("starting python")?;
        checked(out, code)
    }

    /// Runs a snippet that sets jobs up, with `q` the `default` queue ([`DEFAULT_QUEUE`]).
    pub fn enqueue(&self, setup: &str) -> Result<()> {
        self.run(&format!("{DEFAULT_QUEUE}{setup}")).map(drop)
    }

    /// Runs a snippet of Python `assert`s (with `q` the `default` queue) and fails unless
    /// it ran to its end, which prints `ok` and nothing else.
    pub fn check(&self, checks: &str) -> Result<()> {
        let out = self.run(&format!("{DEFAULT_QUEUE}{checks}\nprint(\"ok\")\n"))?;
        ensure!(
            out.trim() == "ok",
            "rq {}: the checks printed {out:?}, not just ok",
            self.version
        );
        Ok(())
    }

    /// `mindora-worker` named `name` on this database with the `--python` pool of this rq
    /// version (`processes` processes, see [`python_pool_args`]) and the `extra` flags.
    pub fn start_pool_worker(
        &self,
        name: &str,
        processes: usize,
        extra: &[&str],
    ) -> Result<WorkerProcess> {
        let mut args = python_pool_args(self.version, processes)?;
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        WorkerProcess::start(&self.db, name, &args)
    }
}

/// The stdout of a Python run of `code`, or an error with the script and its output.
pub fn checked(out: Output, code: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "python failed ({}):\n--- script\n{code}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}
