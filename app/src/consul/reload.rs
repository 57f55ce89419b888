//! Applying KV changes to the running worker: every change is logged old → new and counted
//! in `mindora_config_reloads_total{outcome}`; a bad value is rejected (logged, counted) and
//! the last good value stays; start-only settings are logged as needing a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use mindora_pipelines::{AppOptions, Pipelines};
use tokio::sync::{mpsc, watch};

use super::metric_names::{CONFIG_RELOADS, OUTCOME};
use super::registration::Announced;
use super::settings::{evaluate, KvTree, Layout, LiveSettings, Pinned, Problem};
use super::watch::Snapshot;
use mindora_worker::config::RetryDefaults;
use mindora_worker::logging::LogLevelHandle;

/// Resizes and re-targets the running job loops (provided by the execution core).
pub trait WorkerControl: Send + Sync {
    /// Changes how many jobs run at once; running jobs are not interrupted.
    fn set_concurrency(&self, concurrency: usize);
    /// Replaces the queue list (priority order) for the next fetches.
    fn set_queues(&self, queues: Vec<String>);
}

/// What live changes are applied to.
pub struct LiveTarget {
    /// The log filter.
    pub log: Option<LogLevelHandle>,
    /// Retry defaults shared with the job loops.
    pub retry: RetryDefaults,
    /// Per-app pipeline defaults.
    pub pipelines: Option<Pipelines>,
    /// Concurrency and queues; `None` when the core offers no handle (then they need a restart).
    pub worker: Option<Arc<dyn WorkerControl>>,
}

fn count(outcome: &'static str) {
    metrics::counter!(CONFIG_RELOADS, OUTCOME => outcome).increment(1);
}

/// Turns snapshots of the watched prefixes into applied settings.
pub struct Reloader {
    layout: Layout,
    base: LiveSettings,
    pinned: Pinned,
    current: LiveSettings,
    kv: KvTree,
    reported: BTreeMap<String, String>,
    restart_seen: BTreeMap<String, String>,
    target: LiveTarget,
    announce: watch::Sender<Announced>,
}

impl Reloader {
    /// Starts from `kv` as read at start-up: concurrency, queues and retry defaults from it are
    /// already in the loops' configuration; the log level and per-app options are applied here.
    pub fn new(
        layout: Layout,
        base: LiveSettings,
        pinned: Pinned,
        kv: KvTree,
        target: LiveTarget,
        announce: watch::Sender<Announced>,
    ) -> Self {
        let first = evaluate(&layout, &base, &pinned, &base, &kv);
        let mut r = Reloader {
            layout,
            current: LiveSettings {
                log_level: base.log_level.clone(),
                apps: base.apps.clone(),
                ..first.settings.clone()
            },
            base,
            pinned,
            kv,
            reported: BTreeMap::new(),
            restart_seen: first.restart_only.clone(),
            target,
            announce,
        };
        r.report(&first.problems);
        r.apply(first.settings);
        r
    }

    /// Receives snapshots until every watch has stopped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Snapshot>) {
        while let Some(snap) = rx.recv().await {
            self.on_snapshot(snap);
        }
    }

    /// Replaces one prefix's keys and applies what changed.
    pub fn on_snapshot(&mut self, snap: Snapshot) {
        let stale: Vec<String> = self
            .kv
            .range(snap.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&snap.prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.kv.remove(&k);
        }
        for p in snap.pairs {
            self.kv.insert(p.key, p.value);
        }
        let ev = evaluate(
            &self.layout,
            &self.base,
            &self.pinned,
            &self.current,
            &self.kv,
        );
        self.report(&ev.problems);
        for (key, value) in &ev.restart_only {
            if self.restart_seen.get(key) != Some(value) {
                tracing::warn!(key = %key, old = ?self.restart_seen.get(key), new = %value,
                    "config change needs a restart to take effect");
                count("restart_required");
            }
        }
        for key in self.restart_seen.keys() {
            if !ev.restart_only.contains_key(key) {
                tracing::warn!(key = %key, "config key removed; the change needs a restart");
                count("restart_required");
            }
        }
        self.restart_seen = ev.restart_only.clone();
        self.apply(ev.settings);
    }

    /// Logs each problem once per distinct value.
    fn report(&mut self, problems: &[Problem]) {
        let mut now = BTreeMap::new();
        for p in problems {
            let fingerprint = format!("{p:?}");
            now.insert(p.key().to_string(), fingerprint.clone());
            if self.reported.get(p.key()) == Some(&fingerprint) {
                continue;
            }
            match p {
                Problem::Rejected { key, value, reason } => {
                    tracing::error!(key = %key, value = %value, reason = %reason,
                        "config value rejected; the last good value stays in force");
                    count("rejected");
                }
                Problem::Refused { key } => {
                    tracing::error!(key = %key,
                        "secret refused from Consul KV (value not read); set it in the environment or a file");
                    count("refused");
                }
                Problem::Pinned { key } => tracing::info!(key = %key,
                    "Consul KV value ignored: the command line or environment sets this setting"),
                Problem::Unknown { key } => {
                    tracing::warn!(key = %key, "unknown config key ignored")
                }
            }
        }
        self.reported = now;
    }

    fn apply(&mut self, new: LiveSettings) {
        let old = std::mem::replace(&mut self.current, new.clone());
        if old.concurrency != new.concurrency {
            let n = new.concurrency;
            self.worker_change(
                "concurrency",
                old.concurrency.to_string(),
                n.to_string(),
                |w| w.set_concurrency(n),
            );
        }
        if old.queues != new.queues {
            let queues = new.queues.clone();
            self.worker_change("queues", old.queues.join(","), new.queues.join(","), |w| {
                w.set_queues(queues)
            });
        }
        if old.concurrency != new.concurrency || old.queues != new.queues {
            self.announce.send_replace(Announced {
                queues: new.queues.clone(),
                concurrency: new.concurrency,
            });
        }
        if old.retry != new.retry || old.queue_retry != new.queue_retry {
            match RetryDefaults::from_specs(new.retry.as_deref(), new.queue_retry.as_deref()) {
                Ok(table) => {
                    self.target.retry.replace_with(&table);
                    applied("retry", spec(&old.retry), spec(&new.retry));
                    applied(
                        "queue_retry",
                        spec(&old.queue_retry),
                        spec(&new.queue_retry),
                    );
                }
                // evaluate() validated both; keep the old table if that ever disagrees.
                Err(e) => tracing::error!(error = %e, "retry policy rejected"),
            }
        }
        if old.log_level != new.log_level {
            match &self.target.log {
                Some(h) => match h.set(&new.log_level) {
                    Ok(()) => applied("log_level", old.log_level.clone(), new.log_level.clone()),
                    Err(e) => {
                        tracing::error!(error = %e, "log level rejected");
                        count("rejected");
                    }
                },
                None => restart("log_level", old.log_level.clone(), new.log_level.clone()),
            }
        }
        for (app, opts) in &new.apps {
            let before = old.apps.get(app).cloned().unwrap_or_default();
            if &before != opts {
                match &self.target.pipelines {
                    Some(p) => {
                        p.set_app_options(app, opts.clone());
                        applied(&format!("{app}.pipeline"), json(&before), json(opts));
                    }
                    None => restart(&format!("{app}.pipeline"), json(&before), json(opts)),
                }
            }
        }
    }

    fn worker_change(
        &self,
        name: &str,
        old: String,
        new: String,
        f: impl FnOnce(&dyn WorkerControl),
    ) {
        match &self.target.worker {
            Some(w) => {
                f(w.as_ref());
                applied(name, old, new);
            }
            None => restart(name, old, new),
        }
    }
}

fn json(o: &AppOptions) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

fn spec(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "none".into())
}

fn applied(name: &str, old: String, new: String) {
    if old != new {
        tracing::info!(setting = %name, old = %old, new = %new, "config change applied");
        count("applied");
    }
}

fn restart(name: &str, old: String, new: String) {
    tracing::warn!(setting = %name, old = %old, new = %new,
        "config change needs a restart to take effect (this worker cannot apply it live)");
    count("restart_required");
}

#[cfg(test)]
mod tests;
