//! The `mindora-worker` command line: the engine's flags ([`WorkerArgs`]) plus what only
//! the application has (subcommands, the document pipelines, Consul).

use clap::{Parser, Subcommand};
use mindora_pipelines::PipelineConfig;
use mindora_worker::config::WorkerArgs;

use crate::consul::ConsulArgs;
use crate::history::HistoryArgs;

/// mindora-worker: an RQ-compatible job worker that runs many jobs at once.
#[derive(Debug, Parser)]
#[command(name = "mindora-worker", version, about)]
pub struct Cli {
    /// What to do (default: run the worker).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Worker settings.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Document pipelines (each stage off until its service is configured).
    #[command(flatten)]
    pub pipelines: PipelineConfig,
    /// Consul registration and KV settings (off unless --consul-addr / CONSUL_HTTP_ADDR).
    #[command(flatten)]
    pub consul: ConsulArgs,
    /// The durable job history (off unless --history-database-url).
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker (the default).
    Run,
    /// Exit 0 if the worker on --metrics-addr answers /healthz (container healthcheck).
    Healthcheck,
    /// Declare the RabbitMQ topology (queues, exchanges, DLQs, retry queues) and exit.
    Topology,
    /// Apply the pipelines' PostgreSQL migrations to each app's schema (and with
    /// --history the job history's schema) and exit.
    Migrate {
        /// App name (repeatable); default: MINDORA_APPS.
        #[arg(long = "app")]
        apps: Vec<String>,
        /// Also apply the job history's schema (--history-database-url, --history-schema).
        #[arg(long)]
        history: bool,
    },
}
