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
use serde_json::Value;

use crate::config::{parse_policy, RetryDefaults, WorkerArgs};

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
    pub fn from_args(args: &WorkerArgs, log_level: &str) -> Self {
        LiveSettings {
            concurrency: args.concurrency.max(1),
            queues: args.queues.clone(),
            retry: args.retry.clone(),
            queue_retry: args.queue_retry.clone(),
            log_level: log_level.to_string(),
            apps: args
                .pipelines
                .apps
                .iter()
                .map(|a| (a.clone(), AppOptions::default()))
                .collect(),
        }
    }
}

/// Why a KV value was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Unparsable or out of range: the last good value stays.
    Rejected {
        /// Full key (and field).
        key: String,
        /// The raw value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret: never read from KV (the value is not logged).
    Refused {
        /// Full key (and field).
        key: String,
    },
    /// Set on the command line / in the environment, which win over KV.
    Pinned {
        /// Full key.
        key: String,
    },
    /// Not a key the worker knows.
    Unknown {
        /// Full key.
        key: String,
    },
}

impl Problem {
    /// The key concerned.
    pub fn key(&self) -> &str {
        match self {
            Problem::Rejected { key, .. }
            | Problem::Refused { key }
            | Problem::Pinned { key }
            | Problem::Unknown { key } => key,
        }
    }
}

/// The outcome of reading a KV tree.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Settings to be in force.
    pub settings: LiveSettings,
    /// Values not used, and why.
    pub problems: Vec<Problem>,
    /// Start-only settings found in KV (full key → value text), applied at start only.
    pub restart_only: BTreeMap<String, String>,
}

/// A KV value as text: JSON strings are unquoted, everything else is trimmed as is.
pub fn text(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| "not UTF-8".to_string())?
        .trim();
    if s.starts_with('"') {
        return serde_json::from_str::<String>(s).map_err(|e| format!("bad JSON string: {e}"));
    }
    Ok(s.to_string())
}

/// Parses a concurrency value.
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(1..=MAX_CONCURRENCY).contains(&n) {
        return Err(format!("{n} is outside 1..={MAX_CONCURRENCY}"));
    }
    Ok(n)
}

/// Parses a queue list: `a,b,c` or `["a","b","c"]`.
pub fn parse_queues(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = if s.starts_with('[') {
        serde_json::from_str::<Vec<String>>(s).map_err(|e| format!("bad JSON list: {e}"))?
    } else {
        s.split(',').map(|q| q.trim().to_string()).collect()
    };
    if items.is_empty() || items.iter().any(|q| q.is_empty()) {
        return Err("needs at least one queue and no empty names".into());
    }
    let mut seen = BTreeSet::new();
    for q in &items {
        if q.len() > 200 || q.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{q:?} is not a queue name"));
        }
        if !seen.insert(q) {
            return Err(format!("{q:?} is listed twice"));
        }
    }
    Ok(items)
}

fn optional_spec(s: &str) -> Option<String> {
    (!s.is_empty() && !s.eq_ignore_ascii_case("off")).then(|| s.to_string())
}

/// Validates a log filter.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty filter".into());
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// Reads `kv` over `base` (values from the command line, environment and defaults). A bad
/// value keeps `current`'s (the last good one); a missing key means `base`'s.
pub fn evaluate(
    layout: &Layout,
    base: &LiveSettings,
    pinned: &Pinned,
    current: &LiveSettings,
    kv: &KvTree,
) -> Evaluation {
    let mut ev = Evaluation {
        settings: base.clone(),
        problems: Vec::new(),
        restart_only: BTreeMap::new(),
    };
    let fleet = layout.fleet_prefix();
    for (key, raw) in kv
        .range(fleet.clone()..)
        .take_while(|(k, _)| k.starts_with(&fleet))
    {
        let name = &key[fleet.len()..];
        if name.is_empty() || name.ends_with('/') {
            continue; // folder markers the Consul UI creates
        }
        if is_secret(name) {
            ev.problems.push(Problem::Refused { key: key.clone() });
            continue;
        }
        if !LIVE_KEYS.contains(&name) && !RESTART_KEYS.contains(&name) {
            ev.problems.push(Problem::Unknown { key: key.clone() });
            continue;
        }
        if pinned.contains(name) {
            ev.problems.push(Problem::Pinned { key: key.clone() });
            continue;
        }
        let value = match text(raw) {
            Ok(v) => v,
            Err(reason) => {
                ev.problems.push(Problem::Rejected {
                    key: key.clone(),
                    value: String::from_utf8_lossy(raw).into_owned(),
                    reason,
                });
                keep_current(name, &mut ev.settings, current);
                continue;
            }
        };
        if let Err(reason) = apply_fleet(name, &value, &mut ev) {
            ev.problems.push(Problem::Rejected {
                key: key.clone(),
                value,
                reason,
            });
            keep_current(name, &mut ev.settings, current);
        }
    }
    for app in &layout.apps {
        let (opts, problems, restart) = app_options(layout, app, pinned, current, kv);
        ev.settings.apps.insert(app.clone(), opts);
        ev.problems.extend(problems);
        ev.restart_only.extend(restart);
    }
    ev
}

fn keep_current(name: &str, s: &mut LiveSettings, current: &LiveSettings) {
    match name {
        "concurrency" => s.concurrency = current.concurrency,
        "queues" => s.queues = current.queues.clone(),
        "retry" => s.retry = current.retry.clone(),
        "queue_retry" => s.queue_retry = current.queue_retry.clone(),
        "log_level" => s.log_level = current.log_level.clone(),
        _ => {}
    }
}

fn apply_fleet(name: &str, value: &str, ev: &mut Evaluation) -> Result<(), String> {
    let s = &mut ev.settings;
    match name {
        "concurrency" => s.concurrency = parse_concurrency(value)?,
        "queues" => s.queues = parse_queues(value)?,
        "retry" => {
            let spec = optional_spec(value);
            if let Some(p) = &spec {
                parse_policy(p).map_err(|e| e.to_string())?;
            }
            s.retry = spec;
        }
        "queue_retry" => {
            let spec = optional_spec(value);
            RetryDefaults::from_specs(None, spec.as_deref()).map_err(|e| e.to_string())?;
            s.queue_retry = spec;
        }
        "log_level" => s.log_level = parse_log_level(value)?,
        other => {
            value
                .parse::<u64>()
                .map_err(|_| format!("{value:?} is not a whole number of seconds"))?;
            ev.restart_only.insert(other.to_string(), value.to_string());
        }
    }
    Ok(())
}

type AppRead = (AppOptions, Vec<Problem>, BTreeMap<String, String>);

/// One app's options from `{app}/{env}/ai` and `{app}/{env}/features`.
fn app_options(
    layout: &Layout,
    app: &str,
    pinned: &Pinned,
    current: &LiveSettings,
    kv: &KvTree,
) -> AppRead {
    let prefix = layout.app_prefix(app);
    let last_good = current.apps.get(app).cloned().unwrap_or_default();
    let mut opts = AppOptions::default();
    let mut problems = Vec::new();
    let mut restart = BTreeMap::new();
    for part in ["ai", "features"] {
        let key = format!("{prefix}{part}");
        let Some(raw) = kv.get(&key) else { continue };
        let object = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                problems.push(rejected(
                    &key,
                    raw,
                    format!("expected a JSON object, got {other}"),
                ));
                keep_app_part(part, &mut opts, &last_good);
                continue;
            }
            Err(e) => {
                problems.push(rejected(&key, raw, format!("not JSON: {e}")));
                keep_app_part(part, &mut opts, &last_good);
                continue;
            }
        };
        for field in object.keys().filter(|f| is_secret(f)) {
            problems.push(Problem::Refused {
                key: format!("{key}.{field}"),
            });
        }
        let read = if part == "ai" {
            read_ai(
                &object,
                pinned,
                &key,
                &mut opts,
                &mut problems,
                &mut restart,
            )
        } else {
            read_features(&object, &mut opts)
        };
        if let Err(reason) = read {
            problems.push(rejected(&key, raw, reason));
            keep_app_part(part, &mut opts, &last_good);
        }
    }
    (opts, problems, restart)
}

fn rejected(key: &str, raw: &[u8], reason: String) -> Problem {
    Problem::Rejected {
        key: key.to_string(),
        value: String::from_utf8_lossy(raw).into_owned(),
        reason,
    }
}

fn keep_app_part(part: &str, opts: &mut AppOptions, last_good: &AppOptions) {
    if part == "ai" {
        opts.chunk_size = last_good.chunk_size;
        opts.chunk_overlap = last_good.chunk_overlap;
    } else {
        opts.analyze = last_good.analyze;
        opts.notify = last_good.notify;
        opts.index_fulltext = last_good.index_fulltext;
        opts.index_vectors = last_good.index_vectors;
    }
}

fn read_ai(
    o: &serde_json::Map<String, Value>,
    pinned: &Pinned,
    key: &str,
    opts: &mut AppOptions,
    problems: &mut Vec<Problem>,
    restart: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let size = |f: &str| -> Result<Option<usize>, String> {
        match o.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("{f} must be a whole number, got {v}")),
        }
    };
    let (chunk_size, chunk_overlap) = (size("chunk_size")?, size("chunk_overlap")?);
    if let Some(s) = chunk_size {
        if !(100..=100_000).contains(&s) {
            return Err(format!("chunk_size {s} is outside 100..=100000"));
        }
    }
    if let (Some(s), Some(ov)) = (chunk_size, chunk_overlap) {
        if ov * 2 > s {
            return Err(format!(
                "chunk_overlap {ov} is more than half of chunk_size {s}"
            ));
        }
    }
    for (field, value) in [("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap)] {
        if value.is_some() && pinned.contains(field) {
            problems.push(Problem::Pinned {
                key: format!("{key}.{field}"),
            });
        }
    }
    if !pinned.contains("chunk_size") {
        opts.chunk_size = chunk_size;
    }
    if !pinned.contains("chunk_overlap") {
        opts.chunk_overlap = chunk_overlap;
    }
    for field in APP_RESTART_FIELDS {
        if let Some(v) = o.get(*field) {
            restart.insert(format!("{key}.{field}"), v.to_string());
        }
    }
    Ok(())
}

fn read_features(o: &serde_json::Map<String, Value>, opts: &mut AppOptions) -> Result<(), String> {
    let flag = |f: &str| -> Result<Option<bool>, String> {
        match o.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!("{f} must be true or false, got {v}")),
        }
    };
    opts.index_vectors = flag("semantic_search")?;
    opts.index_fulltext = flag("fulltext_search")?;
    opts.notify = flag("notifications")?;
    opts.analyze = flag("analyze")?;
    Ok(())
}

#[cfg(test)]
mod tests;
