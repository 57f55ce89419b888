//! The KV layout the worker reads, and how raw values become validated settings.
//!
//! ```text
//! mindora/{env}/worker/concurrency          8                      live
//! mindora/{env}/worker/queues               high,default,low       live (also a JSON list)
//! mindora/{env}/worker/retry                max_attempts=5,base=2  live ("" or "off": none)
//! mindora/{env}/worker/queue_retry          low=max_attempts=3     live
//! mindora/{env}/worker/log_level            info,mindora_worker=debug   live (EnvFilter syntax)
//! mindora/{env}/worker/shutdown_grace_secs  25                     read at start
//! mindora/{env}/worker/heartbeat_secs       10                     read at start
//! mindora/{env}/worker/recover_every_secs   15                     read at start
//! {app}/{env}/ai        {"chunk_size":1000,"chunk_overlap":200,...}            live per app
//! {app}/{env}/features  {"semantic_search":true,"fulltext_search":true,
//!                        "notifications":true,"analyze":true}                  live per app
//! ```
//!
//! Precedence: command line > environment > Consul KV > built-in defaults. A value may be
//! plain text (what `consul kv put KEY VALUE` stores) or JSON (what the seed file writes).
//! Secrets never come from KV: connection URLs (`redis_url`, `amqp_url`, `database_url`,
//! `notify_redis_url`) and any key or JSON field whose name contains `password`, `secret`,
//! `token`, `api_key`, `apikey`, `access_key`, `private_key` or `credential` are refused.

use std::collections::{BTreeMap, BTreeSet};

use mindora_pipelines::AppOptions;

use mindora_worker::config::WorkerArgs;

/// Fleet keys applied while the worker runs.
pub const LIVE_KEYS: &[&str] = &["concurrency", "queues", "retry", "queue_retry", "log_level"];
/// Fleet keys read at start only; a change is logged as needing a restart.
pub const RESTART_KEYS: &[&str] = &[
    "shutdown_grace_secs",
    "heartbeat_secs",
    "recover_every_secs",
];
/// Per-app `ai` fields read at start by other services or needing a restart here.
pub const APP_RESTART_FIELDS: &[&str] = &[
    "embed_model",
    "embed_dimensions",
    "embed_base_url",
    "chat_model",
];
/// Keys refused outright (connection strings carry credentials).
pub const REFUSED_KEYS: &[&str] = &["redis_url", "amqp_url", "database_url", "notify_redis_url"];
/// Name fragments that mark a secret.
pub const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "credential",
];
/// Upper bound of `concurrency` (AMQP prefetch is a u16; more slots than this is a typo).
pub const MAX_CONCURRENCY: usize = 4096;

/// Whether a key or field name is a secret the worker refuses from KV.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    REFUSED_KEYS.contains(&n.as_str()) || SECRET_MARKERS.iter().any(|m| n.contains(m))
}

/// Where the worker's keys live for one deployment environment.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `{env}` (dev, staging, prod).
    pub env: String,
    /// Apps whose `{app}/{env}/` trees are read.
    pub apps: Vec<String>,
}

impl Layout {
    /// `mindora/{env}/worker/`.
    pub fn fleet_prefix(&self) -> String {
        format!("mindora/{}/worker/", self.env)
    }

    /// `{app}/{env}/`.
    pub fn app_prefix(&self, app: &str) -> String {
        format!("{app}/{}/", self.env)
    }

    /// Every prefix watched.
    pub fn prefixes(&self) -> Vec<String> {
        let mut p = vec![self.fleet_prefix()];
        p.extend(self.apps.iter().map(|a| self.app_prefix(a)));
        p
    }
}

/// Raw KV values by full key.
pub type KvTree = BTreeMap<String, Vec<u8>>;

/// Settings names pinned by the command line or the environment (KV does not override them).
#[derive(Debug, Clone, Default)]
pub struct Pinned(pub BTreeSet<String>);

/// KV key names that mirror a command-line setting (the clap ids are the same names).
const PINNABLE: &[&str] = &[
    "concurrency",
    "queues",
    "retry",
    "queue_retry",
    "shutdown_grace_secs",
    "heartbeat_secs",
    "recover_every_secs",
    "chunk_size",
    "chunk_overlap",
];

impl Pinned {
    /// The settings given on the command line or in the environment; `log_level` when
    /// `RUST_LOG` is set.
    pub fn from_matches(matches: &clap::ArgMatches, rust_log_set: bool) -> Self {
        use clap::parser::ValueSource;
        let mut set: BTreeSet<String> = PINNABLE
            .iter()
            .filter(|id| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.to_string())
            .collect();
        if rust_log_set {
            set.insert("log_level".into());
        }
        Pinned(set)
    }

    /// Whether `name` was set on the command line or in the environment.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// The settings that change at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// Jobs at once.
    pub concurrency: usize,
    /// Queue lanes in priority order.
    pub queues: Vec<String>,
    /// `--retry` text (validated).
    pub retry: Option<String>,
    /// `--queue-retry` text (validated).
    pub queue_retry: Option<String>,
    /// EnvFilter directives.
    pub log_level: String,
    /// Per-app pipeline defaults.
    pub apps: BTreeMap<String, AppOptions>,
}

impl LiveSettings {
    /// The values from the command line, environment and defaults.
    pub fn from_args(args: &WorkerArgs, apps: &[String], log_level: &str) -> Self {
        LiveSettings {
            concurrency: args.concurrency.max(1),
            queues: args.queues.clone(),
            retry: args.retry.clone(),
            queue_retry: args.queue_retry.clone(),
            log_level: log_level.to_string(),
            apps: apps
                .iter()
                .map(|a| (a.clone(), AppOptions::default()))
                .collect(),
        }
    }
}

mod evaluation;
mod values;

pub use evaluation::{evaluate, Evaluation, Problem};
pub use values::{parse_concurrency, parse_log_level, parse_queues, text};

#[cfg(test)]
mod tests;
