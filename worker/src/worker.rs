//! The embeddable worker: the `mindora-worker` binary is this type plus the document
//! pipelines. A Rust team runs its own handlers with the same flags, environment, metrics,
//! health endpoints and both sources:
//!
//! ```no_run
//! use mindora_worker::handler::{HandlerError, JobContext};
//! use mindora_worker::Worker;
//! use serde_json::{json, Value};
//!
//! async fn resize(ctx: JobContext) -> Result<Value, HandlerError> {
//!     let width = ctx.kwargs.get("width").and_then(Value::as_u64).unwrap_or(100);
//!     Ok(json!({ "width": width }))
//! }
//!
//! # async fn run() -> Result<(), mindora_worker::WorkerError> {
//! Worker::from_env()?.handler("myapp.resize", resize).run().await
//! # }
//! ```
//!
//! [`Worker::handle`] gives a [`WorkerHandle`] that resizes the concurrency budget and
//! replaces the Redis lanes while the worker runs (e.g. from a configuration reload).

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{RetryDefaults, WorkerArgs};
use crate::core::{AttemptSink, Budget, Core, Observer};
use crate::handler::{Handler, Registry};
use crate::metrics::{self as m, Health};
use crate::rq::store::{hostname, RqStore};
use crate::rq::{connect, Lanes, RqConfig, RqSource};

/// Why a worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A flag or variable is missing or invalid.
    #[error("invalid settings: {0}")]
    Config(String),
    /// The metrics endpoint could not be set up.
    #[error(transparent)]
    Metrics(#[from] m::MetricsError),
    /// Redis refused the connection settings.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The AMQP source failed (invalid settings).
    #[error("RabbitMQ source: {0}")]
    Amqp(#[from] crate::amqp::AmqpError),
}

/// The command line of an embedding binary: the worker's own flags and variables.
#[derive(Debug, Parser)]
#[command(about = "mindora worker")]
struct EnvArgs {
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Run-time control of a running worker; cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    budget: Budget,
    lanes: Arc<Lanes>,
    retry: RetryDefaults,
    shutdown: CancellationToken,
}

impl WorkerHandle {
    /// Jobs at once, all sources together.
    pub fn concurrency(&self) -> usize {
        self.budget.size()
    }

    /// Resizes the concurrency budget: growing takes effect at once, shrinking as running
    /// jobs end (none is interrupted). AMQP prefetch follows at the next session.
    pub fn set_concurrency(&self, jobs: usize) {
        self.budget.resize(jobs);
    }

    /// The Redis queues (lanes) in priority order.
    pub fn lanes(&self) -> Vec<String> {
        self.lanes.get().as_ref().clone()
    }

    /// Replaces the Redis lanes (the next claim uses them; the rq worker registration
    /// follows within a second). Returns false, changing nothing, for an empty list.
    pub fn set_lanes(&self, lanes: Vec<String>) -> bool {
        self.lanes.set(lanes)
    }

    /// The default retry policies of the Redis source; every clone shares one table, so
    /// `replace_with` on it changes them while the worker runs.
    pub fn retry_defaults(&self) -> RetryDefaults {
        self.retry.clone()
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Cancelled when a graceful shutdown starts (signal, rq command, [`Self::shutdown`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A worker process: settings, handlers, and the run-time handle.
pub struct Worker {
    args: WorkerArgs,
    registry: Registry,
    handle: WorkerHandle,
    version: String,
    signals: bool,
    /// Where a record of every settled attempt goes (the job history), if anywhere.
    attempt_sink: Option<Arc<dyn AttemptSink>>,
}

impl Worker {
    /// Settings from the process's command line and `MINDORA_*` environment, exactly as
    /// the `mindora-worker` binary reads them (`--help` prints them and exits).
    pub fn from_env() -> Result<Self, WorkerError> {
        let parsed = EnvArgs::try_parse().map_err(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                e.exit()
            }
            _ => WorkerError::Config(e.to_string()),
        })?;
        Worker::from_args(parsed.worker)
    }

    /// Settings from an explicit flag list (as on the command line, without the program
    /// name; flags left out come from `MINDORA_*` variables or their defaults), for
    /// tests and programs that build their settings themselves.
    pub fn from_arg_list<I, T>(flags: I) -> Result<Self, WorkerError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("mindora-worker"))
            .chain(flags.into_iter().map(Into::into));
        let parsed =
            EnvArgs::try_parse_from(argv).map_err(|e| WorkerError::Config(e.to_string()))?;
        Worker::from_args(parsed.worker)
    }

    /// A worker with these settings and the built-in `mindora.*` handlers.
    pub fn from_args(mut args: WorkerArgs) -> Result<Self, WorkerError> {
        // An empty MINDORA_AMQP_URL (a compose override turning the source off) means off.
        if args
            .amqp
            .url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            args.amqp.url = None;
        }
        if args.queues.is_empty() || args.queues.iter().any(|q| q.trim().is_empty()) {
            return Err(WorkerError::Config(
                "--queues needs at least one non-empty queue name".into(),
            ));
        }
        let retry =
            RetryDefaults::from_args(&args).map_err(|e| WorkerError::Config(e.to_string()))?;
        // Before anything names a key (the pipelines, the Python pool): one prefix per process.
        args.redis
            .apply_key_prefix()
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        let mut registry = Registry::new();
        crate::builtins::register(&mut registry);
        let handle = WorkerHandle {
            budget: Budget::new(args.concurrency),
            lanes: Lanes::new(args.queues.clone()),
            retry,
            shutdown: CancellationToken::new(),
        };
        Ok(Worker {
            args,
            registry,
            handle,
            version: format!("mindora-worker {}", env!("CARGO_PKG_VERSION")),
            signals: true,
            attempt_sink: None,
        })
    }

    /// Registers `handler` for jobs naming `name` (replacing any earlier one).
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.registry.register(name, handler);
        self
    }

    /// Sets the handler for jobs whose function no registered handler serves.
    pub fn fallback(mut self, handler: impl Handler) -> Self {
        self.registry.set_fallback(handler);
        self
    }

    /// The handlers, to register many at once.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The version shown in the rq worker hash and `mindora_worker_info`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Whether SIGTERM / SIGINT start a graceful shutdown (default: yes).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Hands a record of every settled attempt, of both sources, to `sink` (the job history
    /// of issue 22); records carry the worker's rq name. Without a sink none is built.
    pub fn set_attempt_sink(&mut self, sink: Arc<dyn AttemptSink>) {
        self.attempt_sink = Some(sink);
    }

    /// [`Worker::set_attempt_sink`], chained.
    pub fn attempt_sink(mut self, sink: Arc<dyn AttemptSink>) -> Self {
        self.set_attempt_sink(sink);
        self
    }

    /// The settings.
    pub fn args(&self) -> &WorkerArgs {
        &self.args
    }

    /// Run-time control (concurrency, lanes, shutdown), usable before and during
    /// [`Worker::run`].
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// Runs both sources until shutdown (signal, rq's shutdown command, the handle, or
    /// burst mode running out of work), drains within `--shutdown-grace-secs`, and returns.
    pub async fn run(self) -> Result<(), WorkerError> {
        let args = self.args;
        let name = args.name.clone().unwrap_or_else(default_name);
        crate::telemetry::set_worker_name(&name);
        let retry_defaults = self.handle.retry.clone();
        if args.amqp.url.is_some() {
            // Bad AMQP settings fail start-up, not silently after the Redis loop ends.
            crate::amqp::Topology::from_args(&args.amqp)?;
        }
        let health = Arc::new(Health::default());
        if let Some(addr) = args.metrics_addr {
            let recorder = m::install()?;
            crate::http::serve(addr, recorder, health.clone()).await?;
        }
        let budget = self.handle.budget.clone();
        metrics::gauge!(m::WORKER_CONCURRENCY).set(budget.size() as f64);
        metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => crate::rq::SOURCE.as_str()).set(0.0);
        let redis = args
            .redis
            .connector(&args.redis_url)
            .map_err(|e| WorkerError::Config(format!("Redis settings: {e}")))?;
        let unusable = |e: redis::RedisError| {
            let reason = if crate::rq::access::is_denied(&e) {
                crate::rq::access::explain(&e, &format!("connect to {}", redis.describe()))
            } else {
                format!("cannot use Redis {}: {e}", redis.describe())
            };
            tracing::error!("{reason}; stopping");
            WorkerError::Config(reason)
        };
        let conn = connect::connect_with_retry(&redis, Duration::from_secs(10))
            .await
            .map_err(unusable)?;
        mindora_sdk::connect::cluster::check_not_a_cluster_node(&redis, &mut conn.clone())
            .await
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        let blocking = connect::connect_with_retry(&redis, Duration::from_secs(10))
            .await
            .map_err(unusable)?;
        tracing::info!(functions = ?self.registry.names(), "handlers registered");
        let observer = self.attempt_sink.map(|sink| Observer::new(sink, &name));
        let core = Core::observed(Arc::new(self.registry), budget, health, observer);

        let shutdown = self.handle.shutdown.clone();
        if self.signals {
            spawn_signal_handler(shutdown.clone());
        }
        let grace = Duration::from_secs(args.shutdown_grace_secs);
        let drain = core.drain_on(shutdown.clone(), grace);
        let amqp = args.amqp.url.is_some().then(|| {
            let source = crate::amqp::run_source(args.amqp.clone(), core.clone(), shutdown.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let result = source.await;
                if result.is_err() {
                    // Settings that cannot work stop the whole worker, not only this source.
                    stop.cancel();
                }
                result
            })
        });
        let cron = match &args.cron {
            Some(path) => {
                let file = crate::cron::CronFile::load(path)
                    .map_err(|e| WorkerError::Config(format!("cron schedule: {e}")))?;
                let run = crate::cron::run(conn.clone(), file, name.clone(), shutdown.clone());
                Some(tokio::spawn(run))
            }
            None => None,
        };
        let rq = RqSource::new(
            RqConfig {
                burst: args.burst,
                heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
                lease: Duration::from_secs(args.lease_secs),
                recover_every: Duration::from_secs(args.recover_every_secs.max(1)),
                abandon_grace_secs: args.abandon_grace_secs.max(1),
                retry_defaults,
                settle_wait: grace + Duration::from_secs(15),
            },
            self.handle.lanes.clone(),
            core.clone(),
            RqStore::new(conn, blocking, name).with_lease(Duration::from_secs(args.lease_secs)),
            redis,
            shutdown.clone(),
            self.version,
        );
        let rq_result = rq.run().await;
        // The Redis side is done (burst, shutdown command or signal): stop the AMQP side too.
        shutdown.cancel();
        if let Some(cron) = cron {
            let _ = cron.await;
        }
        let mut result = rq_result.map_err(WorkerError::Config);
        if let Some(amqp) = amqp {
            match amqp.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(WorkerError::Amqp(e)),
                Err(e) => tracing::error!(error = %e, "RabbitMQ source task failed"),
            }
        }
        let _ = drain.await;
        result
    }
}

/// A default worker name, unique per replica: `host.pid.random`.
pub fn default_name() -> String {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{}.{}.{suffix}", hostname(), std::process::id())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping after running jobs"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping after running jobs"),
                _ = shutdown.cancelled() => return,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = shutdown.cancelled() => return,
            }
        }
        shutdown.cancel();
    });
}

/// Logging as the binary sets it up (`RUST_LOG` filter, text or JSON lines).
pub fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}
