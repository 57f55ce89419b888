//! `mindora-worker` binary: the embeddable engine's [`Worker`] with the document pipelines
//! and Consul, plus the `healthcheck`, `topology` and `migrate` subcommands.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches};
use mindora_pipelines::PipelineConfig;
use mindora_worker::config::{LogFormat, WorkerArgs};
use mindora_worker::logging::{self, LogLevelHandle};
use mindora_worker::Worker;
use mindora_worker_app::cli::{Cli, Command};
use mindora_worker_app::consul::{self, Announced, LiveTarget, Pinned};
use mindora_worker_app::history::{History, HistoryArgs};

/// The longest the exit waits for the job history's last rows.
const HISTORY_FLUSH: Duration = Duration::from_secs(10);

fn init_logging(format: LogFormat) -> LogLevelHandle {
    logging::init(format)
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

async fn run(
    mut args: WorkerArgs,
    config: PipelineConfig,
    consul_args: consul::ConsulArgs,
    history_args: HistoryArgs,
    pinned: Pinned,
    log: LogLevelHandle,
) -> Result<()> {
    // Consul KV fills what the command line and environment leave unset.
    let consul = consul::Session::open(
        &consul_args,
        &args,
        &config.apps,
        pinned,
        &logging::initial_filter(),
    )
    .await
    .context("Consul settings")?;
    if let Some(c) = &consul {
        c.apply_at_start(&mut args);
    }
    let name = args
        .name
        .get_or_insert_with(mindora_worker::worker::default_name)
        .clone();
    let mut worker = Worker::from_args(args).context("worker settings")?;
    // Started before the worker so its first jobs are recorded; connecting, migrating and
    // writing happen in the background, so PostgreSQL being away never holds the worker.
    let history = History::start(&history_args, &name)?;
    if let Some(h) = &history {
        worker.set_attempt_sink(h.sink());
    }
    let pipelines =
        mindora_pipelines::Pipelines::new(config.clone().with_local_embedding_default())
            .await
            .context("configuring the document pipelines")?;
    migrate_apps(&pipelines, &config.apps, false).await?;
    mindora_worker_app::pipelines::register(worker.registry_mut(), pipelines.clone());
    // --python: jobs naming no built-in function run on a pool of Python processes.
    let redis = worker.args().redis.settings(&worker.args().redis_url);
    let python = mindora_worker::python::start_pool(&worker.args().python, &redis)
        .await
        .context("starting the --python pool")?;
    if let Some(pool) = &python {
        worker
            .registry_mut()
            .set_fallback(mindora_worker::python::PythonHandler::new(pool.clone()));
    }
    let handle = worker.handle();
    let consul_task = consul.map(|c| {
        let identity = c.identity(worker.args(), &name);
        let live = Announced {
            queues: handle.lanes(),
            concurrency: handle.concurrency(),
        };
        let target = LiveTarget {
            log: Some(log),
            retry: handle.retry_defaults(),
            pipelines: Some(pipelines),
            worker: Some(Arc::new(handle.clone())),
        };
        c.spawn(identity, live, target, handle.shutdown_token())
    });
    let result = worker.run().await.context("worker");
    handle.shutdown();
    if let Some(task) = consul_task {
        // Deregistration is bounded by the client's timeouts; never hold the exit longer.
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    if let Some(pool) = python {
        pool.shutdown().await;
    }
    if let Some(h) = history {
        // The drained jobs' rows; bounded so an away PostgreSQL cannot hold the exit.
        h.shutdown(HISTORY_FLUSH).await;
    }
    // The last spans (the drained jobs') leave before the process does; bounded by the
    // exporter's timeout, off the runtime's worker threads.
    let _ = tokio::task::spawn_blocking(mindora_worker::telemetry::shutdown).await;
    result
}

#[tokio::main]
async fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let pinned = Pinned::from_matches(&matches, logging::env_pinned());
    match cli.command {
        Some(Command::Healthcheck) => {
            let addr = cli
                .worker
                .metrics_addr
                .context("healthcheck needs --metrics-addr / MINDORA_METRICS_ADDR")?;
            mindora_worker::healthcheck::probe(
                addr,
                "/healthz",
                mindora_worker::healthcheck::TIMEOUT,
            )
            .await
            .with_context(|| format!("worker on {addr} is not healthy"))
        }
        Some(Command::Topology) => {
            let _ = init_logging(cli.worker.log_format);
            mindora_worker::amqp::declare_topology(&cli.worker.amqp)
                .await
                .context("declaring the RabbitMQ topology")
        }
        Some(Command::Migrate { apps, history }) => {
            let _ = init_logging(cli.worker.log_format);
            if history {
                mindora_worker_app::history::migrate(&cli.history).await?;
            }
            let apps = if apps.is_empty() {
                cli.pipelines.apps.clone()
            } else {
                apps
            };
            if apps.is_empty() {
                if history {
                    return Ok(());
                }
                anyhow::bail!("name the apps with --app NAME or MINDORA_APPS (or --history)");
            }
            let pipelines = mindora_pipelines::Pipelines::new(
                cli.pipelines.clone().with_local_embedding_default(),
            )
            .await
            .context("configuring the document pipelines")?;
            migrate_apps(&pipelines, &apps, true).await
        }
        Some(Command::Run) | None => {
            let log = init_logging(cli.worker.log_format);
            run(
                cli.worker,
                cli.pipelines,
                cli.consul,
                cli.history,
                pinned,
                log,
            )
            .await
        }
    }
}
