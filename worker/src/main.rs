//! `mindora-worker` binary: parse settings, start metrics, run the loops, stop on signals.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mindora_worker::config::{Cli, Command, LogFormat, RetryDefaults, WorkerArgs};
use mindora_worker::handler::Registry;
use mindora_worker::metrics::{self, Health};
use mindora_worker::rq_store::{self, RqStore};
use mindora_worker::runner::{RedisLoopConfig, RedisWorker};
use tokio_util::sync::CancellationToken;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn default_name() -> String {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{}.{}.{suffix}", rq_store::hostname(), std::process::id())
}

async fn build_registry(args: &WorkerArgs) -> Result<Registry> {
    let mut registry = Registry::new();
    mindora_worker::builtins::register(&mut registry);
    let pipelines = mindora_pipelines::Pipelines::new(args.pipelines.clone())
        .await
        .context("configuring the document pipelines")?;
    migrate_apps(&pipelines, &args.pipelines.apps, false).await?;
    mindora_worker::pipelines::register(&mut registry, pipelines);
    Ok(registry)
}

/// Applies migrations per app. At start-up (`strict == false`) an unconfigured or unreachable
/// database is logged, not fatal: the pipeline jobs that need it fail with the reason.
async fn migrate_apps(
    pipelines: &mindora_pipelines::Pipelines,
    apps: &[String],
    strict: bool,
) -> Result<()> {
    if !strict && pipelines.config().database_url.is_none() {
        return Ok(());
    }
    for app in apps.iter().filter(|a| !a.trim().is_empty()) {
        match pipelines.migrate(app).await {
            Ok(()) => tracing::info!(app = %app, "migrations applied"),
            Err(e) if !strict => tracing::error!(app = %app, error = %e, "migrations failed"),
            Err(e) => return Err(e).with_context(|| format!("migrating app {app}")),
        }
    }
    Ok(())
}

async fn run(args: WorkerArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(default_name);
    let retry_defaults = RetryDefaults::from_args(&args).context("reading retry settings")?;
    if args.queues.iter().any(|q| q.trim().is_empty()) || args.queues.is_empty() {
        anyhow::bail!("--queues needs at least one non-empty queue name");
    }
    let health = Arc::new(Health::default());
    if let Some(addr) = args.metrics_addr {
        let handle = metrics::install().context("installing the metrics recorder")?;
        metrics::serve(addr, handle, health.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
    }
    let conn = connect_with_retry(&args.redis_url, Duration::from_secs(10)).await?;
    let blocking = connect_with_retry(&args.redis_url, Duration::from_secs(10)).await?;
    let registry = Arc::new(build_registry(&args).await?);
    tracing::info!(functions = ?registry.names(), "handlers registered");

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    if args.amqp.url.is_some() {
        // Bad AMQP settings fail start-up, not silently after the Redis loop ends.
        mindora_worker::amqp::Topology::from_args(&args.amqp).context("RabbitMQ settings")?;
    }
    let amqp = args.amqp.url.is_some().then(|| {
        tokio::spawn(mindora_worker::amqp::run_amqp(
            args.amqp.clone(),
            registry.clone(),
            args.concurrency.max(1),
            shutdown.clone(),
        ))
    });
    let worker = RedisWorker::new(
        RedisLoopConfig {
            queues: args.queues.clone(),
            concurrency: args.concurrency.max(1),
            burst: args.burst,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            recover_every: Duration::from_secs(args.recover_every_secs.max(1)),
            abandon_grace_secs: args.abandon_grace_secs.max(1),
            retry_defaults,
        },
        registry,
        RqStore::new(conn, name),
        blocking,
        args.redis_url.clone(),
        shutdown.clone(),
        health,
        format!("mindora-worker {}", env!("CARGO_PKG_VERSION")),
    );
    worker.run().await;
    // The Redis side is done (burst, shutdown command or signal): stop the AMQP side too.
    shutdown.cancel();
    if let Some(amqp) = amqp {
        match amqp.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).context("RabbitMQ source"),
            Err(e) => return Err(e).context("RabbitMQ source task"),
        }
    }
    Ok(())
}

/// Redis may start after us (compose, restarts): keep trying, loudly.
async fn connect_with_retry(url: &str, timeout: Duration) -> Result<redis::aio::ConnectionManager> {
    let mut backoff = mindora_worker::runner::Backoff::default();
    loop {
        match rq_store::connect(url, timeout).await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_connection_refusal() || e.is_timeout() || e.is_io_error() => {
                tracing::warn!(error = %e, url = %redact(url), "Redis not reachable yet; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", redact(url))),
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
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
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    });
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck) => {
            let addr = cli
                .worker
                .metrics_addr
                .context("healthcheck needs --metrics-addr / MINDORA_METRICS_ADDR")?;
            if metrics::probe(addr, "/healthz").await {
                Ok(())
            } else {
                anyhow::bail!("worker on {addr} is not healthy")
            }
        }
        Some(Command::Topology) => {
            init_logging(cli.worker.log_format);
            mindora_worker::amqp::declare_topology(&cli.worker.amqp)
                .await
                .context("declaring the RabbitMQ topology")
        }
        Some(Command::Migrate { apps }) => {
            init_logging(cli.worker.log_format);
            let apps = if apps.is_empty() {
                cli.worker.pipelines.apps.clone()
            } else {
                apps
            };
            if apps.is_empty() {
                anyhow::bail!("name the apps with --app NAME or MINDORA_APPS");
            }
            let pipelines = mindora_pipelines::Pipelines::new(cli.worker.pipelines.clone())
                .await
                .context("configuring the document pipelines")?;
            migrate_apps(&pipelines, &apps, true).await
        }
        Some(Command::Run) | None => {
            init_logging(cli.worker.log_format);
            run(cli.worker).await
        }
    }
}
