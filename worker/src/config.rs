//! The engine's flags and environment (every flag is also a `MINDORA_*` variable); the
//! `mindora-worker` binary adds its subcommands, pipelines and Consul flags in `app/src/cli.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use clap::{Args, FromArgMatches, ValueEnum};
use mindora_sdk::RetryPolicy;

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of the worker process.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Redis holding the rq queues.
    #[arg(
        long,
        env = "MINDORA_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,
    /// TLS, ACL and Sentinel settings of that Redis.
    #[command(flatten)]
    pub redis: crate::connect_args::RedisConnectArgs,
    /// Queues in strict priority order: a job on an earlier queue always runs first.
    #[arg(
        long,
        env = "MINDORA_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// Jobs run at once in this process.
    #[arg(long, env = "MINDORA_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Worker name (default: host.pid.random, unique per replica).
    #[arg(long, env = "MINDORA_NAME")]
    pub name: Option<String>,
    /// Exit once the queues are empty and nothing runs.
    #[arg(long, env = "MINDORA_BURST", default_value_t = false)]
    pub burst: bool,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9100).
    #[arg(long, env = "MINDORA_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "MINDORA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long running jobs may take to finish before they are requeued.
    #[arg(long, env = "MINDORA_SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Heartbeat period for the worker and its running jobs.
    #[arg(long, env = "MINDORA_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Seconds past its last heartbeat window after which a running job counts as
    /// abandoned (rq uses 60; lower it only in tests).
    #[arg(long, env = "MINDORA_ABANDON_GRACE_SECS", default_value_t = mindora_sdk::wire::STARTED_GRACE_SECS)]
    pub abandon_grace_secs: i64,
    /// Liveness lease in seconds: when a worker dies (kill -9, host gone, cut off from
    /// Redis), surviving workers recover its running jobs once its lease lapses, instead of
    /// after rq's TTL rule (~60-105 s). 0 disables it. Python rq workers' jobs are never
    /// recovered early.
    #[arg(long, env = "MINDORA_LEASE_SECS", default_value_t = 12)]
    pub lease_secs: u64,
    /// How often the fleet looks for jobs abandoned by dead workers.
    #[arg(long, env = "MINDORA_RECOVER_EVERY_SECS", default_value_t = 15)]
    pub recover_every_secs: u64,
    /// Default retry policy for jobs that carry none, e.g.
    /// `max_attempts=5,base=2,factor=2,cap=300,jitter=0.2` (off when unset).
    #[arg(long, env = "MINDORA_RETRY")]
    pub retry: Option<String>,
    /// Per-queue default retry policies, `queue=<policy>` separated by `;`, e.g.
    /// `low=max_attempts=3,base=10;high=max_attempts=8,base=1`.
    #[arg(long, env = "MINDORA_QUEUE_RETRY")]
    pub queue_retry: Option<String>,
    /// Schedule file of periodic jobs (TOML, or YAML when named `*.yaml`/`*.yml`); every
    /// replica may run the same file, each tick is enqueued once.
    #[arg(long, env = "MINDORA_CRON")]
    pub cron: Option<std::path::PathBuf>,
    /// RabbitMQ source (off unless --amqp-url / MINDORA_AMQP_URL is set).
    #[command(flatten)]
    pub amqp: crate::amqp::AmqpArgs,
    /// Python tasks (`--python`): a process pool for rq jobs not built in.
    #[command(flatten)]
    pub python: crate::python::PythonArgs,
}

/// A malformed setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid retry policy {spec:?}: {reason}")]
pub struct PolicyError {
    spec: String,
    reason: String,
}

/// Parses `max_attempts=5,base=2,factor=2,cap=300,jitter=0.2`.
pub fn parse_policy(spec: &str) -> Result<RetryPolicy, PolicyError> {
    let err = |reason: String| PolicyError {
        spec: spec.to_string(),
        reason,
    };
    let (mut max_attempts, mut base, mut factor, mut cap, mut jitter) =
        (3u32, 1.0, 2.0, 300.0, 0.1);
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| err(format!("{part:?} is not key=value")))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| err(format!("{k}: {e}")));
        match k.trim() {
            "max_attempts" | "max" => {
                max_attempts = v.parse().map_err(|e| err(format!("{k}: {e}")))?
            }
            "base" => base = num(v)?,
            "factor" => factor = num(v)?,
            "cap" => cap = num(v)?,
            "jitter" => jitter = num(v)?,
            other => return Err(err(format!("unknown key {other:?}"))),
        }
    }
    if !(0.0..=1.0).contains(&jitter) || base < 0.0 || factor < 1.0 || cap < 0.0 {
        return Err(err(
            "need base >= 0, factor >= 1, cap >= 0, 0 <= jitter <= 1".into(),
        ));
    }
    Ok(RetryPolicy::Exponential {
        max_attempts,
        base_secs: base,
        factor,
        cap_secs: cap,
        jitter,
    })
}

/// What a group of flags (`T`, e.g. [`crate::amqp::AmqpArgs`]) holds when no flag is given,
/// without reading the environment: clap's own defaults, so that the constructors for
/// embedding (tests, benchmarks) cannot drift from the command line's defaults.
pub fn flag_defaults<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    let cmd = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None));
    T::from_arg_matches(&cmd.try_get_matches_from(["defaults"])?)
}

/// Default retry policies by queue. Clones share one table, so a change made at run time
/// (Consul KV) reaches the loops that hold a clone.
#[derive(Debug, Clone, Default)]
pub struct RetryDefaults {
    table: Arc<RwLock<RetryTable>>,
}

#[derive(Debug, Clone, Default)]
struct RetryTable {
    all: Option<RetryPolicy>,
    by_queue: HashMap<String, RetryPolicy>,
}

impl RetryDefaults {
    /// Builds the table from the two settings.
    pub fn from_args(args: &WorkerArgs) -> Result<Self, PolicyError> {
        Self::from_specs(args.retry.as_deref(), args.queue_retry.as_deref())
    }

    /// Builds the table from `--retry` and `--queue-retry` texts.
    pub fn from_specs(retry: Option<&str>, queue_retry: Option<&str>) -> Result<Self, PolicyError> {
        let all = retry.map(parse_policy).transpose()?;
        let mut by_queue = HashMap::new();
        if let Some(spec) = queue_retry {
            for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let (q, p) = item.split_once('=').ok_or_else(|| PolicyError {
                    spec: item.to_string(),
                    reason: "expected queue=policy".into(),
                })?;
                by_queue.insert(q.trim().to_string(), parse_policy(p)?);
            }
        }
        Ok(RetryDefaults {
            table: Arc::new(RwLock::new(RetryTable { all, by_queue })),
        })
    }

    /// The policy for jobs on `queue` that carry none.
    pub fn for_queue(&self, queue: &str) -> Option<RetryPolicy> {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.by_queue.get(queue).or(t.all.as_ref()).cloned()
    }

    /// Makes every clone of `self` use `other`'s policies from now on.
    pub fn replace_with(&self, other: &RetryDefaults) {
        let new = other
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies() {
        let p = parse_policy("max_attempts=5,base=2,factor=3,cap=60,jitter=0").expect("valid");
        assert_eq!(p.retries(), 4);
        assert_eq!(p.rq_intervals(), vec![2, 6, 18, 54]);
        assert!(parse_policy("nope").is_err());
        assert!(parse_policy("jitter=2").is_err());
    }
}
