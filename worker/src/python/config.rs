//! `--python` and its settings (each also a `MINDORA_PYTHON*` variable).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use mindora_sdk::connect::RedisSettings;

/// Command-line settings of the Python pool.
#[derive(Debug, Clone, Args)]
pub struct PythonArgs {
    /// Run rq jobs whose function is not built in with a pool of Python processes. This
    /// trusts whoever can write to Redis, exactly as `rq worker` does (pickle is executed).
    #[arg(long = "python", env = "MINDORA_PYTHON", default_value_t = false)]
    pub enabled: bool,
    /// Python interpreter (needs `rq` and `mindora_runner` importable).
    #[arg(
        long = "python-interpreter",
        env = "MINDORA_PYTHON_INTERPRETER",
        default_value = "python3"
    )]
    pub interpreter: PathBuf,
    /// A virtualenv to take the interpreter from (`<venv>/bin/python`); wins over
    /// --python-interpreter.
    #[arg(long = "python-venv", env = "MINDORA_PYTHON_VENV")]
    pub venv: Option<PathBuf>,
    /// Directories prepended to PYTHONPATH (the app's code), separated by `:`.
    #[arg(
        long = "python-path",
        env = "MINDORA_PYTHON_PATH",
        value_delimiter = ':'
    )]
    pub path: Vec<PathBuf>,
    /// Python processes, started ahead of time.
    #[arg(
        long = "python-processes",
        env = "MINDORA_PYTHON_PROCESSES",
        default_value_t = 2
    )]
    pub processes: usize,
    /// `async def` jobs one process runs at once.
    #[arg(
        long = "python-async-slots",
        env = "MINDORA_PYTHON_ASYNC_SLOTS",
        default_value_t = 8
    )]
    pub async_slots: usize,
    /// Recycle a process after this many jobs (0: never).
    #[arg(
        long = "python-max-jobs",
        env = "MINDORA_PYTHON_MAX_JOBS",
        default_value_t = 0
    )]
    pub max_jobs: u64,
    /// Recycle a process whose resident memory exceeds this many MiB after a job (0: never).
    #[arg(
        long = "python-max-rss-mb",
        env = "MINDORA_PYTHON_MAX_RSS_MB",
        default_value_t = 0
    )]
    pub max_rss_mb: u64,
    /// Seconds a job may wait for a free process (when `--concurrency` exceeds what the
    /// processes run at once); past it the job fails with `PythonProcessWaitTimeout` and
    /// rq's retry policy applies. Its `job_timeout` starts only when a process takes it.
    /// 0: wait as long as it takes.
    #[arg(
        long = "python-wait-secs",
        env = "MINDORA_PYTHON_WAIT_SECS",
        default_value_t = 600
    )]
    pub wait_secs: u64,
    /// Seconds a new process may take to import and say hello.
    #[arg(
        long = "python-start-timeout-secs",
        env = "MINDORA_PYTHON_START_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub start_timeout_secs: u64,
    /// Dotted path of a custom rq serializer for every job (default: pickle or JSON, told
    /// from each job's bytes).
    #[arg(long = "python-serializer", env = "MINDORA_PYTHON_SERIALIZER")]
    pub serializer: Option<String>,
    /// Modules each process imports before taking jobs, comma-separated.
    #[arg(
        long = "python-preload",
        env = "MINDORA_PYTHON_PRELOAD",
        value_delimiter = ','
    )]
    pub preload: Vec<String>,
}

/// Settings of a [`super::PythonPool`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Interpreter to run `-m mindora_runner` with.
    pub interpreter: PathBuf,
    /// Prepended to PYTHONPATH.
    pub python_path: Vec<PathBuf>,
    /// Redis the jobs live in (the runner loads the job and saves `meta` there): the
    /// worker's own settings, TLS files, ACL user and Sentinel included.
    pub redis: RedisSettings,
    /// Processes kept running.
    pub processes: usize,
    /// `async def` jobs per process at once.
    pub async_slots: usize,
    /// Recycle after this many jobs (0: never).
    pub max_jobs: u64,
    /// Recycle above this RSS in bytes (0: never).
    pub max_rss_bytes: u64,
    /// Handshake deadline.
    pub start_timeout: Duration,
    /// Longest wait for a free process (None: no limit).
    pub wait: Option<Duration>,
    /// Custom serializer path.
    pub serializer: Option<String>,
    /// Modules to import at start.
    pub preload: Vec<String>,
}

impl PoolConfig {
    /// The command line's defaults (see [`PythonArgs`]) for `interpreter` against `redis_url`.
    pub fn new(
        interpreter: impl Into<PathBuf>,
        redis_url: impl Into<String>,
    ) -> Result<Self, clap::Error> {
        let mut args: PythonArgs = crate::config::flag_defaults()?;
        args.interpreter = interpreter.into();
        Ok(Self::from_args(&args, &RedisSettings::from_url(redis_url)))
    }

    /// From the command line; `redis` are the worker's Redis settings.
    pub fn from_args(args: &PythonArgs, redis: &RedisSettings) -> Self {
        let interpreter = match &args.venv {
            Some(venv) => venv.join("bin/python"),
            None => args.interpreter.clone(),
        };
        PoolConfig {
            interpreter,
            python_path: args.path.clone(),
            redis: redis.clone(),
            processes: args.processes.max(1),
            async_slots: args.async_slots.max(1),
            max_jobs: args.max_jobs,
            max_rss_bytes: args.max_rss_mb.saturating_mul(1024 * 1024),
            start_timeout: Duration::from_secs(args.start_timeout_secs.max(1)),
            wait: (args.wait_secs > 0).then(|| Duration::from_secs(args.wait_secs)),
            serializer: args.serializer.clone().filter(|s| !s.trim().is_empty()),
            preload: args
                .preload
                .iter()
                .filter(|m| !m.trim().is_empty())
                .cloned()
                .collect(),
        }
    }
}

/// The `MINDORA_REDIS_*` variables a runner process reads (`mindora_runner/connection.py`),
/// the names the worker's own flags read; `None` means "unset it" (so a stale value in the
/// worker's environment cannot contradict a flag).
pub(crate) fn redis_env(r: &RedisSettings) -> Vec<(&'static str, Option<String>)> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let sentinels = Some(r.sentinel.addrs.join(",")).filter(|s| !s.is_empty());
    vec![
        ("MINDORA_REDIS_URL", Some(r.url.clone())),
        ("MINDORA_REDIS_USERNAME", r.username.clone()),
        ("MINDORA_REDIS_PASSWORD", r.password.clone()),
        ("MINDORA_REDIS_PASSWORD_FILE", path(&r.password_file)),
        ("MINDORA_REDIS_CA_FILE", path(&r.tls.ca_file)),
        ("MINDORA_REDIS_CLIENT_CERT", path(&r.tls.client_cert)),
        ("MINDORA_REDIS_CLIENT_KEY", path(&r.tls.client_key)),
        ("MINDORA_REDIS_SENTINELS", sentinels),
        (
            "MINDORA_REDIS_SENTINEL_MASTER",
            r.sentinel.master_name.clone(),
        ),
        (
            "MINDORA_REDIS_SENTINEL_USERNAME",
            r.sentinel.username.clone(),
        ),
        (
            "MINDORA_REDIS_SENTINEL_PASSWORD",
            r.sentinel.password.clone(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new` takes clap's defaults: these are the values it used to restate by hand.
    #[test]
    fn new_has_the_command_line_defaults() {
        let c = PoolConfig::new("/usr/bin/python3", "redis://127.0.0.1:6379/3").unwrap();
        assert_eq!(c.interpreter, PathBuf::from("/usr/bin/python3"));
        assert!(c.python_path.is_empty());
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379/3");
        assert_eq!(c.processes, 2);
        assert_eq!(c.async_slots, 8);
        assert_eq!(c.max_jobs, 0);
        assert_eq!(c.max_rss_bytes, 0);
        assert_eq!(c.start_timeout, Duration::from_secs(30));
        assert_eq!(c.wait, Some(Duration::from_secs(600)));
        assert!(c.serializer.is_none());
        assert!(c.preload.is_empty());
    }
}
