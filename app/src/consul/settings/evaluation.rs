//! Reading a KV tree over the base settings: fleet keys, per-app `ai` / `features` JSON,
//! pinned and secret keys, and what was rejected or needs a restart.

use std::collections::BTreeMap;

use mindora_pipelines::AppOptions;
use serde_json::Value;

use mindora_worker::config::{parse_policy, RetryDefaults};

use super::values::{optional_spec, parse_concurrency, parse_log_level, parse_queues, text};
use super::{
    is_secret, KvTree, Layout, LiveSettings, Pinned, APP_RESTART_FIELDS, LIVE_KEYS, RESTART_KEYS,
};

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
