//! Claim, for the AMQP source: the consume loop, spelled out.
//!
//! 1. **Connect**: one connection, topology re-declared, a consuming channel with
//!    prefetch = the process budget (per consumer for one queue, channel-wide when several
//!    queues share it), a confirm-mode channel
//!    for everything the worker publishes.
//! 2. **Claim**: each delivery waits for a slot of the process budget (the same budget the
//!    rq source draws from), then runs as a unit of work in the shared core
//!    ([`super::settle::process`] settles it).
//! 3. **Around it**: queue depths sampled for the metrics; connection or channel loss
//!    ends the session and the loop reconnects with backoff (unacked messages come back
//!    from the broker); shutdown cancels the consumers, waits for running tasks to settle
//!    (the core interrupts them when `--shutdown-grace-secs` runs out, and they are nacked
//!    with requeue), and closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, SelectAll, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, ConnectionProperties};
use mindora_sdk::amqp::dlq_name;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::acks::Acks;
use super::envelope::Defaults;
use super::topology::Topology;
use super::{AmqpArgs, AmqpError};
use crate::backoff::{self, Pacer};
use crate::core::Core;
use crate::metrics as m;

/// Counter: AMQP sessions lost and re-established (broker restarts, forced closes).
pub const AMQP_RECONNECTS: &str = "mindora_amqp_reconnects_total";

/// Source label of AMQP tasks in metrics and handler contexts.
pub const SOURCE: crate::core::Source = crate::core::Source::Amqp;

/// What every settling task shares.
pub(super) struct Shared {
    pub(super) topology: Topology,
    pub(super) defaults: Defaults,
}

/// Why a session ended.
enum SessionEnd {
    /// Shutdown was requested and done.
    Shutdown,
    /// The connection or a channel went away.
    Lost(String),
}

pub(super) async fn run(
    args: AmqpArgs,
    core: Arc<Core>,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    let topology = Topology::from_args(&args)?;
    let connector = super::connector(&args)?;
    let shared = Arc::new(Shared {
        topology,
        defaults: Defaults {
            max_attempts: args.max_attempts,
            timeout_secs: args.job_timeout_secs,
        },
    });
    let active = watch::Sender::new(0usize);
    let mut pacer = Pacer::new(backoff::amqp_session());
    core.health()
        .amqp_enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => SOURCE.as_str()).set(0.0);
    let mut ever_up = false;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let started = Instant::now();
        let end = session(&connector, &args, &core, &shared, &active, &shutdown).await;
        ever_up |= core
            .health()
            .amqp_up
            .load(std::sync::atomic::Ordering::Relaxed);
        core.health().set_amqp_up(false);
        let reason = match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost(reason)) => reason,
            Err(AmqpError::Config(c)) => return Err(AmqpError::Config(c)),
            // Before the first session, a TLS rejection or refused login is a setting to
            // fix: stop with it rather than retry forever (later, a broker being replaced
            // may cause them for a while, so the loop keeps trying).
            Err(AmqpError::Broker(e))
                if !ever_up && mindora_sdk::connect::amqp::is_config_error(&e) =>
            {
                return Err(AmqpError::Config(format!(
                    "cannot connect to {}: {e}",
                    connector.describe()
                )))
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() > Duration::from_secs(30) {
            pacer.reset();
        }
        let pause = pacer.next_delay();
        metrics::counter!(AMQP_RECONNECTS).increment(1);
        warn!(error = %reason, retry_in_ms = pause.as_millis() as u64, "AMQP session lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Tasks of a lost session may still be running; their acks can't land (the broker
    // redelivers those messages), but let them end (the core bounds them by the grace).
    let _ = active.subscribe().wait_for(|n| *n == 0).await;
    info!("AMQP source stopped");
    Ok(())
}

async fn session(
    connector: &mindora_sdk::connect::amqp::AmqpConnector,
    args: &AmqpArgs,
    core: &Arc<Core>,
    shared: &Arc<Shared>,
    active: &watch::Sender<usize>,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AmqpError> {
    let conn = connector
        .connect(
            ConnectionProperties::default()
                .with_connection_name(args.connection_name.clone().into()),
        )
        .await?;
    let setup = conn.create_channel().await?;
    shared.topology.declare(&setup).await?;

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consuming = conn.create_channel().await?;
    let budget = core.budget().clone();
    let window = Window {
        global: shared.topology.consumed().count() > 1,
    };
    let prefetch = prefetch_of(budget.size());
    window.set(&consuming, prefetch).await?;
    let acks = Acks::start(consuming.clone(), usize::from(prefetch));
    let mut streams = SelectAll::new();
    let mut consumers = Vec::new();
    for q in shared.topology.consumed() {
        let (tag, stream) = consume(&consuming, &q.name).await?;
        consumers.push((q.name.clone(), tag));
        streams.push(stream);
    }
    info!(queues = ?shared.topology.consumed().map(|q| q.name.as_str()).collect::<Vec<_>>(), prefetch, global = window.global, "AMQP source consuming");
    core.health().set_amqp_up(true);

    let depth_stop = CancellationToken::new();
    let depth = tokio::spawn(depth_loop(
        setup,
        shared.topology.clone(),
        Duration::from_secs(args.depth_every_secs.max(1)),
        depth_stop.clone(),
    ));
    let end = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            next = streams.next() => match next {
                Some((queue, Ok(delivery))) => {
                    // Registered first: if it never starts it stays unacked (redelivered).
                    acks.delivered(delivery.delivery_tag);
                    let slot = tokio::select! {
                        s = budget.acquire() => match s {
                            Some(s) => s,
                            None => break SessionEnd::Shutdown,
                        },
                        // Not started: the broker redelivers it when the channel closes.
                        _ = shutdown.cancelled() => break SessionEnd::Shutdown,
                    };
                    let id = delivery.delivery_tag.to_string();
                    let unit = super::settle::AmqpUnit::new(
                        shared.clone(),
                        queue.clone(),
                        delivery,
                        publisher.clone(),
                        acks.clone(),
                    );
                    active.send_modify(|n| *n += 1);
                    let active = active.clone();
                    let worker = core.clone();
                    core.spawn(slot, SOURCE, &id, &queue, async move {
                        worker.work(unit).await;
                        active.send_modify(|n| *n = n.saturating_sub(1));
                    });
                }
                Some((queue, Err(e))) => break SessionEnd::Lost(format!("consumer on {queue}: {e}")),
                None => break SessionEnd::Lost("consumers were cancelled by the broker".into()),
            },
        }
    };
    depth_stop.cancel();
    let _ = depth.await;
    if let SessionEnd::Lost(_) = end {
        return Ok(end);
    }
    // Graceful stop: no new deliveries; running tasks settle on the live channel (the core
    // interrupts them at the grace deadline and they are nacked with requeue); then closing
    // the channel returns anything prefetched but not started.
    for (_, tag) in consumers {
        if let Err(e) = consuming
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            debug!(error = %e, "basic.cancel failed (channel already closing)");
        }
    }
    let running = *active.borrow();
    if running > 0 {
        info!(running, "waiting for running AMQP tasks to settle");
    }
    let _ = active.subscribe().wait_for(|n| *n == 0).await;
    acks.flush().await;
    let _ = consuming.close(200, "shutdown".into()).await;
    let _ = publisher.close(200, "shutdown".into()).await;
    let _ = conn.close(200, "shutdown".into()).await;
    Ok(SessionEnd::Shutdown)
}

/// The prefetch for a budget of `size` slots (AMQP caps it at 65535).
fn prefetch_of(size: usize) -> u16 {
    u16::try_from(size.max(1)).unwrap_or(u16::MAX)
}

/// A delivery stream of one consumer, labelled with its queue.
type Deliveries = BoxStream<'static, (Arc<str>, Result<Delivery, lapin::Error>)>;

/// Starts a consumer on `queue`: its tag and its deliveries.
async fn consume(channel: &Channel, queue: &str) -> Result<(ShortString, Deliveries), AmqpError> {
    let consumer = channel
        .basic_consume(
            ShortString::try_new(queue)
                .map_err(|_| AmqpError::Config(format!("queue name {queue:?} too long")))?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let tag = consumer.tag();
    let label: Arc<str> = Arc::from(queue);
    Ok((tag, consumer.map(move |d| (label.clone(), d)).boxed()))
}

/// How the consuming channel's prefetch (= the process budget) is applied.
///
/// One consumed queue: per consumer (`global=false`, what pika and most clients use). The
/// queue keeps the count itself; a channel-wide limit makes RabbitMQ ask the channel's
/// limiter process on every delivery, which costs the broker noticeably more per message.
/// Several queues: channel-wide (`global=true`), shared by all.
struct Window {
    global: bool,
}

impl Window {
    async fn set(&self, channel: &Channel, prefetch: u16) -> Result<(), AmqpError> {
        channel
            .basic_qos(
                prefetch,
                BasicQosOptions {
                    global: self.global,
                },
            )
            .await?;
        Ok(())
    }
}

/// Samples the consumed queues' depth (and their DLQs') for the metrics.
async fn depth_loop(ch: Channel, topology: Topology, every: Duration, stop: CancellationToken) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        for q in topology.consumed() {
            for name in [q.name.clone(), dlq_name(&q.name)] {
                let Ok(short) = ShortString::try_new(name.as_str()) else {
                    continue;
                };
                match ch
                    .queue_declare(short, passive, FieldTable::default())
                    .await
                {
                    Ok(info) => {
                        metrics::gauge!(m::QUEUE_DEPTH, "source" => SOURCE.as_str(), "queue" => name)
                            .set(f64::from(info.message_count()));
                    }
                    // The session notices a dead connection on its own.
                    Err(_) => return,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
