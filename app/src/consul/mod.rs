//! Consul: the worker registers itself (with a health check), reads its settings from KV and
//! applies changes while it runs.
//!
//! - [`client`]: the typed HTTP client (agent registration, TTL checks, KV blocking queries).
//! - [`registration`]: the service instance and the loop that keeps it registered.
//! - [`settings`]: the KV layout, precedence, validation and refused (secret) keys.
//! - [`watch`]: blocking-query long polls per prefix, with backoff and jitter.
//! - [`reload`]: applying changes (old → new logs, `mindora_config_reloads_total`).
//!
//! Consul is optional and never on the critical path: without it (or while it is away) the
//! worker runs on its command line, environment and defaults, readiness does not depend on
//! it, and registration and watches reconnect by themselves.

pub mod client;
pub mod registration;
pub mod reload;
pub mod settings;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::{ConsulClient, ConsulError};
pub use registration::{Announced, Identity};
pub use reload::{LiveTarget, Reloader, WorkerControl};
pub use settings::{evaluate, KvTree, Layout, LiveSettings, Pinned};

use mindora_worker::config::WorkerArgs;

/// Metric names (a contract with `infra/`).
pub mod metric_names {
    /// Counter: KV changes by `outcome` (`applied`, `rejected`, `refused`, `restart_required`).
    pub const CONFIG_RELOADS: &str = "mindora_config_reloads_total";
    /// Label of [`CONFIG_RELOADS`].
    pub const OUTCOME: &str = "outcome";
    /// Gauge: 1 while this worker is registered in Consul.
    pub const CONSUL_REGISTERED: &str = "mindora_consul_registered";
}

/// Consul settings (off unless `--consul-addr` / `CONSUL_HTTP_ADDR` is set).
#[derive(Debug, Clone, Args)]
pub struct ConsulArgs {
    /// Consul agent, `host:port` or `http(s)://host:port` (Consul's own variable).
    #[arg(long, env = "CONSUL_HTTP_ADDR")]
    pub consul_addr: Option<String>,
    /// ACL token (Consul's own variable); prefer the token file.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,
    /// File holding the ACL token.
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE")]
    pub consul_token_file: Option<PathBuf>,
    /// Deployment environment: the `{env}` of `mindora/{env}/worker/` and `{app}/{env}/`.
    #[arg(long, env = "MINDORA_DEPLOY_ENV", default_value = "dev")]
    pub consul_env: String,
    /// Register this worker as a `mindora-worker` service instance.
    #[arg(long, env = "MINDORA_CONSUL_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub consul_register: bool,
    /// Address Consul's HTTP check reaches this replica on (default: the hostname).
    #[arg(long, env = "MINDORA_CONSUL_ADVERTISE")]
    pub consul_advertise: Option<String>,
    /// Health check interval (HTTP check on /healthz; without --metrics-addr a TTL check of
    /// three intervals that the worker passes).
    #[arg(long, env = "MINDORA_CONSUL_CHECK_INTERVAL_SECS", default_value_t = 10)]
    pub consul_check_interval_secs: u64,
    /// Consul removes an instance whose check stayed critical this long (minimum 60).
    #[arg(
        long,
        env = "MINDORA_CONSUL_DEREGISTER_AFTER_SECS",
        default_value_t = 60
    )]
    pub consul_deregister_after_secs: u64,
    /// How often to check that Consul still knows this instance.
    #[arg(long, env = "MINDORA_CONSUL_RESYNC_SECS", default_value_t = 30)]
    pub consul_resync_secs: u64,
    /// Longest wait of one KV blocking query (Consul caps it at 600).
    #[arg(long, env = "MINDORA_CONSUL_WAIT_SECS", default_value_t = 300)]
    pub consul_wait_secs: u64,
}

/// Exponential backoff with jitter for reconnecting to Consul (never gives up).
pub(crate) fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The execution core's run-time handle applies concurrency and queue changes.
impl WorkerControl for mindora_worker::WorkerHandle {
    fn set_concurrency(&self, concurrency: usize) {
        mindora_worker::WorkerHandle::set_concurrency(self, concurrency);
    }

    fn set_queues(&self, queues: Vec<String>) {
        if !self.set_lanes(queues) {
            tracing::error!("queue list not applied: it is empty");
        }
    }
}

/// Errors setting Consul up (bad address, unreadable token file).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The address does not parse.
    #[error(transparent)]
    Client(#[from] ConsulError),
    /// The token file cannot be read.
    #[error("cannot read the Consul token file {path}: {source}")]
    TokenFile {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Time allowed for the first KV read before the worker starts without it.
const INITIAL_READ: Duration = Duration::from_secs(3);

/// A worker's link to Consul, from start-up to shutdown.
pub struct Session {
    client: ConsulClient,
    args: ConsulArgs,
    layout: Layout,
    pinned: Pinned,
    base: LiveSettings,
    kv: KvTree,
    initial: Vec<(String, client::KvListing)>,
}

impl Session {
    /// `None` without a Consul address. Reads the KV tree once (for at most 3 s): when Consul
    /// does not answer the worker starts without it and the watches catch up later.
    pub async fn open(
        c: &ConsulArgs,
        args: &WorkerArgs,
        apps: &[String],
        pinned: Pinned,
        log_level: &str,
    ) -> Result<Option<Session>, SetupError> {
        let Some(addr) = c.consul_addr.as_deref().filter(|a| !a.trim().is_empty()) else {
            return Ok(None);
        };
        let token = match &c.consul_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| SetupError::TokenFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            None => c.consul_token.clone(),
        };
        let client = ConsulClient::new(addr, token)?;
        let layout = Layout {
            env: c.consul_env.clone(),
            apps: apps
                .iter()
                .filter(|a| !a.trim().is_empty())
                .cloned()
                .collect(),
        };
        let (kv, initial) = match watch::read_once(&client, &layout.prefixes(), INITIAL_READ).await
        {
            Ok(listings) => {
                let kv = listings
                    .iter()
                    .flat_map(|(_, l)| l.pairs.iter())
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect();
                (kv, listings)
            }
            Err(e) => {
                tracing::warn!(error = %e, consul = %client.base(),
                    "Consul KV not readable at start; starting on the command line, environment and defaults");
                (KvTree::new(), Vec::new())
            }
        };
        Ok(Some(Session {
            client,
            args: c.clone(),
            layout,
            pinned,
            base: LiveSettings::from_args(args, apps, log_level),
            kv,
            initial,
        }))
    }

    /// Puts KV values into `args` where nothing pinned them: the live settings and the
    /// start-only ones (`shutdown_grace_secs`, `heartbeat_secs`, `recover_every_secs`).
    pub fn apply_at_start(&self, args: &mut WorkerArgs) {
        let ev = evaluate(&self.layout, &self.base, &self.pinned, &self.base, &self.kv);
        args.concurrency = ev.settings.concurrency;
        args.queues = ev.settings.queues.clone();
        args.retry = ev.settings.retry.clone();
        args.queue_retry = ev.settings.queue_retry.clone();
        for (key, value) in &ev.restart_only {
            let Ok(secs) = value.parse::<u64>() else {
                continue;
            };
            match key.as_str() {
                "shutdown_grace_secs" => args.shutdown_grace_secs = secs,
                "heartbeat_secs" => args.heartbeat_secs = secs.max(1),
                "recover_every_secs" => args.recover_every_secs = secs.max(1),
                _ => {}
            }
        }
    }

    /// Starts registration, the KV watches and the reloader. The returned task ends after
    /// `shutdown`, once the instance is deregistered.
    pub fn spawn(
        self,
        identity: Option<Identity>,
        started_with: Announced,
        target: LiveTarget,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let (announce_tx, announce_rx) = tokio_watch::channel(started_with);
        let reloader = Reloader::new(
            self.layout.clone(),
            self.base,
            self.pinned,
            self.kv,
            target,
            announce_tx,
        );
        let (tx, rx) = mpsc::channel(16);
        let wait = Duration::from_secs(self.args.consul_wait_secs.clamp(1, 600));
        let mut initial: std::collections::BTreeMap<_, _> = self.initial.into_iter().collect();
        for prefix in self.layout.prefixes() {
            tokio::spawn(watch::watch_prefix(
                self.client.clone(),
                prefix.clone(),
                initial.remove(&prefix),
                wait,
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        let reloading = tokio::spawn(reloader.run(rx));
        let registering = identity.map(|id| {
            tokio::spawn(registration::keep_registered(
                self.client.clone(),
                id,
                announce_rx,
                Duration::from_secs(self.args.consul_resync_secs.max(1)),
                shutdown.clone(),
            ))
        });
        tokio::spawn(async move {
            if let Some(r) = registering {
                let _ = r.await;
            }
            shutdown.cancelled().await;
            let _ = reloading.await;
        })
    }

    /// The registration identity of this replica, unless registration is off.
    pub fn identity(&self, args: &WorkerArgs, worker_name: &str) -> Option<Identity> {
        if !self.args.consul_register {
            return None;
        }
        let mut sources = vec!["redis"];
        if args.amqp.url.is_some() {
            sources.push("amqp");
        }
        Some(Identity {
            service_id: registration::service_id(worker_name),
            worker_name: worker_name.to_string(),
            address: self
                .args
                .consul_advertise
                .clone()
                .unwrap_or_else(mindora_worker::rq::store::hostname),
            health_port: args.metrics_addr.map(|a| a.port()),
            sources,
            version: env!("CARGO_PKG_VERSION").to_string(),
            check_interval: Duration::from_secs(self.args.consul_check_interval_secs.max(1)),
            deregister_after: Duration::from_secs(self.args.consul_deregister_after_secs),
        })
    }
}
