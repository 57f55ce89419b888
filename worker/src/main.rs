//! `mindora-worker` binary: the embeddable [`Worker`] with the document pipelines, plus
//! the `healthcheck`, `topology` and `migrate` subcommands.

use anyhow::{Context, Result};
use clap::Parser;
use mindora_worker::config::{Cli, Command, WorkerArgs};
use mindora_worker::{init_logging, Worker};

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
    let mut worker = Worker::from_args(args).context("worker settings")?;
    let pipelines = mindora_pipelines::Pipelines::new(worker.args().pipelines.clone())
        .await
        .context("configuring the document pipelines")?;
    migrate_apps(&pipelines, &worker.args().pipelines.apps, false).await?;
    mindora_worker::pipelines::register(worker.registry_mut(), pipelines);
    // --python: jobs naming no built-in function run on a pool of Python processes.
    let python =
        mindora_worker::python::start_pool(&worker.args().python, &worker.args().redis_url)
            .await
            .context("starting the --python pool")?;
    if let Some(pool) = &python {
        worker
            .registry_mut()
            .set_fallback(mindora_worker::python::PythonHandler::new(pool.clone()));
    }
    let result = worker.run().await.context("worker");
    if let Some(pool) = python {
        pool.shutdown().await;
    }
    result
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
            if mindora_worker::http::probe(addr, "/healthz").await {
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
