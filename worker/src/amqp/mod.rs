//! The RabbitMQ task source: the same handlers, retries, metrics and shutdown as the
//! rq loop, fed from AMQP queues (`ai_processing_tasks` and friends) instead of Redis.
//!
//! - [`topology`]: the queues and exchanges the worker relies on, declared idempotently
//!   with exactly the arguments of `infra/rabbitmq/definitions.json`.
//! - [`envelope`]: turning a delivery into a task (or a reason it is malformed).
//! - [`consumer`]: claim — the consume loop, feeding deliveries to the shared core, with
//!   reconnects.
//! - [`settle`]: ack / delayed retry / DLQ / RPC reply of each outcome.
//!
//! The envelope contract itself is `mindora_sdk::amqp`, shared with publishers.

mod acks;
pub mod consumer;
pub mod envelope;
pub mod settle;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::{Budget, Core};
use crate::handler::Registry;
use crate::metrics::Health;

pub use acks::AMQP_ACK_FRAMES;
pub use consumer::AMQP_RECONNECTS;
pub use topology::Topology;

/// Settings of the AMQP source; flattened into the worker's command line by `main.rs`
/// (kept here so the AMQP source can evolve without touching the shared config).
#[derive(clap::Args, Debug, Clone)]
pub struct AmqpArgs {
    /// RabbitMQ to consume from, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`. The AMQP
    /// source is off when unset.
    #[arg(long = "amqp-url", env = "MINDORA_AMQP_URL")]
    pub url: Option<String>,
    /// Work queues to consume (each gets a DLQ and delayed-retry queues).
    #[arg(
        id = "amqp_queues",
        long = "amqp-queues",
        env = "MINDORA_AMQP_QUEUES",
        value_delimiter = ',',
        default_value = "ai_processing_tasks"
    )]
    pub queues: Vec<String>,
    /// Apps whose `{app}_internal_tasks` queue (and DLQ, and binding on
    /// `inter_app_communication` for `{app}.#`) are declared; they are consumed only when
    /// also listed in `--amqp-queues`.
    #[arg(
        id = "amqp_apps",
        long = "amqp-apps",
        env = "MINDORA_APPS",
        value_delimiter = ','
    )]
    pub apps: Vec<String>,
    /// `x-max-priority` of the work queues (not of app queues, which are plain FIFO in the
    /// shipped definitions). Must match the broker's existing queues.
    #[arg(
        long = "amqp-max-priority",
        env = "MINDORA_AMQP_MAX_PRIORITY",
        default_value_t = 10
    )]
    pub max_priority: u8,
    /// Delays of the retry queues in seconds: failed attempt n waits the n-th (the last
    /// one repeats), so 5,25,125,625 is exponential backoff with factor 5.
    #[arg(
        long = "amqp-retry-delays",
        env = "MINDORA_AMQP_RETRY_DELAYS",
        value_delimiter = ',',
        default_value = "5,25,125,625"
    )]
    pub retry_delays: Vec<u64>,
    /// Attempts before a task goes to `<queue>.dlq` when its envelope sets no
    /// `max_attempts`.
    #[arg(
        long = "amqp-max-attempts",
        env = "MINDORA_AMQP_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,
    /// Handler timeout when the envelope sets no `timeout_secs` (0: none).
    #[arg(
        long = "amqp-job-timeout-secs",
        env = "MINDORA_AMQP_JOB_TIMEOUT_SECS",
        default_value_t = 1800
    )]
    pub job_timeout_secs: u64,
    /// Connection name shown by `rabbitmqctl list_connections` and the management UI.
    #[arg(
        long = "amqp-connection-name",
        env = "MINDORA_AMQP_CONNECTION_NAME",
        default_value = "mindora-worker"
    )]
    pub connection_name: String,
    /// Also declare the shared messaging topology (`user_notifications`, `system_events`,
    /// `inter_app_communication`); turn off where another component owns it.
    #[arg(
        long = "amqp-declare-shared",
        env = "MINDORA_AMQP_DECLARE_SHARED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub declare_shared: bool,
    /// How often queue depths are sampled for the metrics.
    #[arg(
        long = "amqp-depth-every-secs",
        env = "MINDORA_AMQP_DEPTH_EVERY_SECS",
        default_value_t = 5
    )]
    pub depth_every_secs: u64,
    /// TLS files for `amqps://` brokers.
    #[command(flatten)]
    pub tls: crate::connect_args::AmqpTlsArgs,
}

impl AmqpArgs {
    /// The command line's defaults with `url`, for embedding (tests, benchmarks) without
    /// parsing a command line (the environment is not read either).
    pub fn new(url: impl Into<String>) -> Result<Self, clap::Error> {
        let mut args: AmqpArgs = crate::config::flag_defaults()?;
        args.url = Some(url.into());
        Ok(args)
    }
}

/// Errors of the AMQP source.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// A setting is missing or invalid (fix the configuration; retrying will not help).
    #[error("invalid AMQP settings: {0}")]
    Config(String),
    /// The broker refused an operation or the connection failed.
    #[error("amqp: {0}")]
    Broker(#[from] lapin::Error),
    /// Publishing (retry, DLQ, reply) failed.
    #[error(transparent)]
    Publish(#[from] mindora_sdk::amqp::AmqpError),
}

/// Declares the whole topology once (the `mindora-worker topology` subcommand, and
/// deploy scripts); safe to run any number of times against a live broker.
pub async fn declare_topology(args: &AmqpArgs) -> Result<(), AmqpError> {
    let topology = Topology::from_args(args)?;
    let conn = connector(args)?
        .connect(
            lapin::ConnectionProperties::default()
                .with_connection_name(format!("{} topology", args.connection_name).into()),
        )
        .await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    let _ = channel.close(200, "declared".into()).await;
    let _ = conn.close(200, "declared".into()).await;
    Ok(())
}

/// The brokers of `--amqp-url` (several, comma-separated, are tried in turn) with the TLS
/// files of `--amqp-ca-file` / `--amqp-client-cert` / `--amqp-client-key`.
pub(crate) fn connector(
    args: &AmqpArgs,
) -> Result<mindora_sdk::connect::amqp::AmqpConnector, AmqpError> {
    args.tls
        .connector(topology::url(args)?)
        .map_err(|e| AmqpError::Config(e.to_string()))
}

/// Consumes the configured queues within `core`'s budget until `shutdown` is cancelled,
/// then cancels the consumers, lets running tasks settle (the core interrupts them when the
/// shutdown grace ends; they go back to the broker) and closes. Connection or channel loss
/// is survived by reconnecting with backoff (unacked messages are redelivered by the
/// broker), so this only returns early on invalid settings.
pub async fn run_source(
    args: AmqpArgs,
    core: Arc<Core>,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    consumer::run(args, core, shutdown).await
}

/// The AMQP source alone, with a core of its own (`concurrency` slots, 25 s shutdown
/// grace): for tests and benchmarks. A worker process uses [`crate::Worker`], which
/// shares one core between both sources.
pub async fn run_amqp(
    args: AmqpArgs,
    registry: Arc<Registry>,
    concurrency: usize,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    run_amqp_observed(args, registry, concurrency, shutdown, None).await
}

/// [`run_amqp`] with a record of every settled attempt handed to `observer`.
pub async fn run_amqp_observed(
    args: AmqpArgs,
    registry: Arc<Registry>,
    concurrency: usize,
    shutdown: CancellationToken,
    observer: Option<crate::core::Observer>,
) -> Result<(), AmqpError> {
    let core = Core::observed(
        registry,
        Budget::new(concurrency),
        Arc::new(Health::default()),
        observer,
    );
    let drain = core.drain_on(shutdown.clone(), Duration::from_secs(25));
    let result = consumer::run(args, core, shutdown).await;
    drain.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new` takes clap's defaults: these are the values it used to restate by hand.
    #[test]
    fn new_has_the_command_line_defaults() {
        let a = AmqpArgs::new("amqp://x").unwrap();
        assert_eq!(a.url.as_deref(), Some("amqp://x"));
        assert_eq!(a.queues, vec![mindora_sdk::amqp::DEFAULT_QUEUE.to_string()]);
        assert!(a.apps.is_empty());
        assert_eq!(a.max_priority, 10);
        assert_eq!(a.retry_delays, vec![5, 25, 125, 625]);
        assert_eq!(a.max_attempts, 5);
        assert_eq!(a.job_timeout_secs, 1800);
        assert_eq!(a.connection_name, "mindora-worker");
        assert!(a.declare_shared);
        assert_eq!(a.depth_every_secs, 5);
        assert!(
            a.tls.ca_file.is_none() && a.tls.client_cert.is_none() && a.tls.client_key.is_none()
        );
    }
}
