//! The Redis (rq) source. It claims jobs from rq queues and settles their outcomes exactly
//! as Python `rq` records them; running them is the shared [`crate::core`]'s job.
//!
//! Lifecycle of the source, top to bottom ([`RqSource::run`]):
//!
//! 1. **Register** as an rq worker (`rq info`, `Worker.all()` list it).
//! 2. **Fetch** ([`fetch`]): take free slots from the process budget, claim that many jobs
//!    in one script call in strict lane order, or block on the first lane when idle.
//! 3. **Run + settle** ([`unit`], [`settle`]): each claimed job runs through the core;
//!    its outcome is recorded by one transition script (finish / fail / retry / stop /
//!    requeue) — the settle module is the only caller of those scripts. Successes that
//!    end close together share one finish call (group commit).
//! 4. **Around it**: [`heartbeat`] keeps the worker and its executions alive,
//!    [`maintenance`] moves scheduled jobs and recovers dead workers' jobs, [`commands`]
//!    obeys rq's shutdown / stop-job / kill-horse, [`meta`] writes progress to `job.meta`.
//! 5. **Drain** (grace enforced by the core), then unregister.
//!
//! Every Redis call is behind [`store::RqStore`]; every connection comes from
//! [`connect`].

pub mod access;
pub mod commands;
pub mod connect;
pub mod fetch;
pub mod heartbeat;
pub mod maintenance;
pub mod meta;
pub mod settle;
pub mod store;
pub mod unit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RetryDefaults;
use crate::core::Core;
use crate::metrics as m;
use store::RqStore;

/// Source label of rq jobs in metrics and handler contexts.
pub const SOURCE: crate::core::Source = crate::core::Source::Redis;

/// rq's job monitoring interval: executions are considered abandoned this long plus the
/// abandon grace after their last heartbeat.
pub const MONITOR_INTERVAL_SECS: i64 = 30;

/// Settings of the rq source.
#[derive(Debug, Clone)]
pub struct RqConfig {
    /// Exit when idle.
    pub burst: bool,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Liveness lease of this worker (zero: none, jobs wait for rq's TTL rule). Renewed at
    /// least three times per lease; surviving workers recover the jobs of a worker whose
    /// lease lapsed.
    pub lease: Duration,
    /// Abandoned-job recovery period.
    pub recover_every: Duration,
    /// Grace past the heartbeat window before a running job counts as abandoned.
    pub abandon_grace_secs: i64,
    /// Default retry policies.
    pub retry_defaults: RetryDefaults,
    /// Longest wait for running jobs to be settled at shutdown (the core interrupts them
    /// at the grace deadline; this bounds the recording after it).
    pub settle_wait: Duration,
}

/// The queues (lanes) the rq source serves, in strict priority order; replaceable at run
/// time (the next claim uses the new list; the worker registration follows within a
/// second).
#[derive(Debug)]
pub struct Lanes {
    current: RwLock<Arc<Vec<String>>>,
}

impl Lanes {
    /// Lanes starting as `queues`.
    pub fn new(queues: Vec<String>) -> Arc<Self> {
        Arc::new(Lanes {
            current: RwLock::new(Arc::new(queues)),
        })
    }

    /// The lanes now.
    pub fn get(&self) -> Arc<Vec<String>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the lanes; an empty list is refused (returns false).
    pub fn set(&self, queues: Vec<String>) -> bool {
        let queues: Vec<String> = queues
            .into_iter()
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
        if queues.is_empty() {
            return false;
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(queues);
        true
    }
}

/// One running execution, as the heartbeat and rq's commands see it.
pub(crate) struct Running {
    job_id: String,
    queue: String,
    exec_id: String,
    timeout_secs: i64,
    started: Instant,
    stop: CancellationToken,
}

/// The rq source of one worker process.
pub struct RqSource {
    cfg: RqConfig,
    lanes: Arc<Lanes>,
    core: Arc<Core>,
    store: RqStore,
    redis: mindora_sdk::RedisConnector,
    running: Mutex<HashMap<String, Running>>,
    /// Units of work of this source not yet settled.
    active: watch::Sender<usize>,
    shutdown: CancellationToken,
    version: String,
    /// Why the worker must stop (a refused permission or credential), once known.
    fatal: Mutex<Option<String>>,
    /// Executions claimed and not yet settled (`<job id>:<execution id>`), which a
    /// reconciliation with a new master keeps.
    owned: Mutex<std::collections::HashSet<String>>,
    /// Claims hold it shared from the claim call until [`RqSource::owned`] lists the jobs;
    /// reconciliation exclusively, so it never sees a claim half done.
    claim_gate: tokio::sync::RwLock<()>,
}

impl RqSource {
    /// The source; `store` names the worker.
    pub fn new(
        cfg: RqConfig,
        lanes: Arc<Lanes>,
        core: Arc<Core>,
        store: RqStore,
        redis: mindora_sdk::RedisConnector,
        shutdown: CancellationToken,
        version: String,
    ) -> Arc<Self> {
        Arc::new(RqSource {
            cfg,
            lanes,
            core,
            store,
            redis,
            running: Mutex::new(HashMap::new()),
            active: watch::Sender::new(0),
            shutdown,
            version,
            fatal: Mutex::new(None),
            owned: Mutex::new(std::collections::HashSet::new()),
            claim_gate: tokio::sync::RwLock::new(()),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // consistent (single inserts/removes), so keep going.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the worker for a refused permission or credential met while doing `what`:
    /// true when `e` is one (logged at ERROR with the ACL rule that allows it).
    pub(crate) fn denied(&self, e: &redis::RedisError, what: &str) -> bool {
        if !access::is_denied(e) {
            return false;
        }
        self.stop_for(access::explain(e, what));
        true
    }

    fn stop_for(&self, reason: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            error!("{reason}; stopping");
            *fatal = Some(reason);
        }
        self.shutdown.cancel();
    }

    /// Runs until shutdown (or, in burst mode, until idle); then waits for its running jobs
    /// to be settled and unregisters. An error is a permission or credential Redis refused
    /// (a settings error: the process should exit non-zero).
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        let queues = self.lanes.get();
        if let Err(reason) =
            access::preflight(&self.store.conn(), &self.redis, self.store.worker()).await
        {
            error!("{reason}; stopping");
            return Err(reason);
        }
        if !self.cfg.lease.is_zero() {
            // A previous process of this name that died leaves its jobs to us at once.
            self.recover_lapsed(true).await;
        }
        let registered = (|| self.store.register_birth(&queues, &self.version))
            .retry(crate::backoff::reconnect())
            .when(|e| !access::is_denied(e))
            .notify(|e, _| warn!(error = %e, "cannot register with Redis yet; retrying"));
        tokio::select! {
            r = registered => if let Err(e) = r {
                self.denied(&e, "register the worker (rq:worker:<name>, rq:workers, mindora:worker-lease:<name>)");
                return self.outcome();
            },
            _ = self.shutdown.cancelled() => return self.outcome(),
        }
        // rq's worker turns idle once it waits for work; ours too (claims make it busy).
        if let Err(e) = self.store.set_state("idle", None).await {
            warn!(error = %e, "could not set the worker state");
        }
        let health = self.core.health();
        health.redis_ok();
        health
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!(worker = self.store.worker(), queues = ?queues, concurrency = self.core.budget().size(), "worker started");
        metrics::gauge!(m::WORKER_INFO, "name" => self.store.worker().to_string(), "version" => self.version.clone()).set(1.0);
        metrics::counter!(m::REDIS_RECONNECTS).absolute(0);

        let background = CancellationToken::new();
        let hb = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        // The lanes may have changed since `queues` was registered: the loop catches up.
        let mt = tokio::spawn(
            self.clone()
                .maintenance_loop(background.clone(), queues.clone()),
        );
        let ps = tokio::spawn(self.clone().command_loop(background.clone()));

        self.fetch_loop().await;

        // The core interrupts what still runs when the grace ends; wait for the records.
        let mut active = self.active.subscribe();
        if tokio::time::timeout(self.cfg.settle_wait, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!("some jobs were not settled in time; recovery will handle them");
        }
        background.cancel();
        let _ = tokio::join!(hb, mt, ps);
        let queues = self.lanes.get();
        if let Err(e) = self.store.release_scheduler_locks(&queues).await {
            warn!(error = %e, "could not release scheduler locks (they expire by themselves)");
        }
        if let Err(e) = self.store.register_death(&queues).await {
            warn!(error = %e, "could not unregister (the worker key expires by itself)");
        }
        info!(worker = self.store.worker(), "worker stopped");
        self.outcome()
    }

    fn outcome(&self) -> Result<(), String> {
        match self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}
