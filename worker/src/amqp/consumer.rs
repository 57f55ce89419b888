//! The consume loop, spelled out:
//!
//! 1. **Connect**: one connection, topology re-declared, a consuming channel with
//!    prefetch = concurrency (shared by all consumed queues), a confirm-mode channel for
//!    everything the worker publishes.
//! 2. **Run**: every delivery runs as its own task (handler inside `tokio::spawn`, so a
//!    panic is a failed attempt, not a dead worker), under the envelope's timeout.
//! 3. **Settle**, always publish-then-ack so a crash in between re-runs a task rather than
//!    losing it (at-least-once): success → reply (if `reply_to`) → ack; retryable failure
//!    with attempts left → body unchanged to `<queue>.retry.<delay>` with the next attempt
//!    and the history in headers → ack; otherwise → `<queue>.dlq` with error, history and
//!    reason → error reply → ack. Malformed bodies go straight to the DLQ.
//! 4. **Around it**: queue depths sampled for the metrics; connection or channel loss
//!    ends the session and the loop reconnects with backoff (unacked messages come back
//!    from the broker); shutdown cancels the consumers, waits for running tasks to settle,
//!    and closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{SelectAll, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use mindora_sdk::amqp::{
    dlq_name, publish_confirmed, retry_queue_name, AmqpError as SdkAmqpError, AttemptRecord, Reply,
    ReplyError, CONTENT_TYPE, DLX_EXCHANGE, HEADER_ATTEMPT, HEADER_DEAD_REASON, HEADER_ERROR,
    HEADER_HISTORY, HEADER_QUEUE,
};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::envelope::{self, history_value, text, Defaults, Task};
use super::topology::{self, Topology};
use super::{AmqpArgs, AmqpError};
use crate::handler::{HandlerError, JobContext, Registry};
use crate::metrics as m;

/// Counter: AMQP sessions lost and re-established (broker restarts, forced closes).
pub const AMQP_RECONNECTS: &str = "mindora_amqp_reconnects_total";

const SOURCE: &str = "amqp";

/// What every settling task shares.
struct Shared {
    registry: Arc<Registry>,
    topology: Topology,
    defaults: Defaults,
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
    registry: Arc<Registry>,
    concurrency: usize,
    shutdown: CancellationToken,
) -> Result<(), AmqpError> {
    let topology = Topology::from_args(&args)?;
    let url = topology::url(&args)?.to_string();
    let concurrency = concurrency.clamp(1, usize::from(u16::MAX));
    let shared = Arc::new(Shared {
        registry,
        topology,
        defaults: Defaults {
            max_attempts: args.max_attempts,
            timeout_secs: args.job_timeout_secs,
        },
    });
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut failures: u32 = 0;
    metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => SOURCE).set(0.0);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let started = Instant::now();
        let end = session(
            &url,
            &args,
            &shared,
            concurrency,
            &slots,
            &mut tasks,
            &shutdown,
        )
        .await;
        let reason = match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost(reason)) => reason,
            Err(AmqpError::Config(c)) => return Err(AmqpError::Config(c)),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let pause = backoff(failures);
        metrics::counter!(AMQP_RECONNECTS).increment(1);
        warn!(error = %reason, retry_in_ms = pause.as_millis() as u64, "AMQP session lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Tasks of a lost session may still be running; their acks can't land (the broker
    // redelivers those messages), but let them finish rather than abort mid-handler.
    while tasks.join_next().await.is_some() {}
    info!("AMQP source stopped");
    Ok(())
}

/// 200 ms doubling to 10 s, with up to 25 % jitter so a fleet does not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(10_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

#[allow(clippy::too_many_arguments)]
async fn session(
    url: &str,
    args: &AmqpArgs,
    shared: &Arc<Shared>,
    concurrency: usize,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AmqpError> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(args.connection_name.clone().into()),
    )
    .await?;
    let setup = conn.create_channel().await?;
    shared.topology.declare(&setup).await?;

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consuming = conn.create_channel().await?;
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    consuming
        .basic_qos(prefetch, BasicQosOptions { global: true })
        .await?;
    let mut streams = SelectAll::new();
    let mut tags = Vec::new();
    for q in shared.topology.consumed() {
        let consumer = consuming
            .basic_consume(
                ShortString::try_new(q.name.as_str())
                    .map_err(|_| AmqpError::Config(format!("queue name {:?} too long", q.name)))?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tags.push(consumer.tag());
        let queue: Arc<str> = Arc::from(q.name.as_str());
        streams.push(consumer.map(move |d| (queue.clone(), d)).boxed());
    }
    info!(queues = ?shared.topology.consumed().map(|q| q.name.as_str()).collect::<Vec<_>>(), prefetch, "AMQP source consuming");

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
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break SessionEnd::Shutdown,
                        },
                        // Not started: the broker redelivers it when the channel closes.
                        _ = shutdown.cancelled() => break SessionEnd::Shutdown,
                    };
                    let shared = shared.clone();
                    let publisher = publisher.clone();
                    let span = tracing::info_span!("amqp_task", queue = %queue, tag = delivery.delivery_tag);
                    tasks.spawn(async move {
                        settle(shared, queue, delivery, publisher).await;
                        drop(permit);
                    }.instrument(span));
                }
                Some((queue, Err(e))) => break SessionEnd::Lost(format!("consumer on {queue}: {e}")),
                None => break SessionEnd::Lost("consumers were cancelled by the broker".into()),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    depth_stop.cancel();
    let _ = depth.await;
    if let SessionEnd::Lost(_) = end {
        return Ok(end);
    }
    // Graceful stop: no new deliveries, running tasks settle (ack) on the live channel,
    // then closing the channel returns anything prefetched but not started.
    for tag in tags {
        if let Err(e) = consuming
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            debug!(error = %e, "basic.cancel failed (channel already closing)");
        }
    }
    let running = tasks.len();
    if running > 0 {
        info!(running, "waiting for running AMQP tasks to settle");
    }
    while tasks.join_next().await.is_some() {}
    let _ = consuming.close(200, "shutdown".into()).await;
    let _ = publisher.close(200, "shutdown".into()).await;
    let _ = conn.close(200, "shutdown".into()).await;
    Ok(SessionEnd::Shutdown)
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
                        metrics::gauge!(m::QUEUE_DEPTH, "source" => SOURCE, "queue" => name)
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

/// Runs one delivery and settles it; never panics, never returns early without either
/// acking or leaving the message for redelivery.
async fn settle(shared: Arc<Shared>, queue: Arc<str>, delivery: Delivery, publisher: Channel) {
    let task = match envelope::parse(&delivery.data, &delivery.properties, shared.defaults) {
        Ok(t) => t,
        Err(reason) => {
            metrics::counter!(m::JOBS_STARTED, "source" => SOURCE, "queue" => queue.to_string(), "function" => "<malformed>").increment(1);
            metrics::counter!(m::JOBS_FAILED, "source" => SOURCE, "queue" => queue.to_string(), "function" => "<malformed>").increment(1);
            warn!(%reason, "malformed message; dead-lettering");
            let err = HandlerError::permanent("MalformedEnvelope", reason);
            dead_letter(&queue, &delivery, &publisher, &err, "malformed", &[], 1).await;
            metrics::counter!(m::JOBS_DEAD_LETTERED, "source" => SOURCE, "queue" => queue.to_string(), "function" => "<malformed>").increment(1);
            return;
        }
    };
    let function = task.envelope.function.clone();
    let labels = [
        ("source", SOURCE.to_string()),
        ("queue", queue.to_string()),
        ("function", function.clone()),
    ];
    metrics::counter!(m::JOBS_STARTED, &labels).increment(1);
    metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => SOURCE).increment(1.0);
    let started = Instant::now();
    let outcome = execute(&shared.registry, &queue, &task).await;
    let elapsed = started.elapsed();
    metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => SOURCE).decrement(1.0);
    metrics::histogram!(m::JOB_DURATION, &labels).record(elapsed.as_secs_f64());
    match outcome {
        Ok(value) => {
            debug!(task = %task.id, function = %function, ms = elapsed.as_millis() as u64, "task finished");
            let reply = Reply {
                id: task.id.clone(),
                ok: true,
                result: value,
                error: None,
                attempt: task.attempt,
            };
            if !send_reply(&delivery, &publisher, &reply).await {
                return;
            }
            ack(&delivery).await;
            metrics::counter!(m::JOBS_FINISHED, &labels).increment(1);
        }
        Err(err) => {
            metrics::counter!(m::JOBS_FAILED, &labels).increment(1);
            let mut history = task.history.clone();
            history.push(AttemptRecord {
                attempt: task.attempt,
                kind: err.kind.clone(),
                message: err.message.clone(),
                at: chrono::Utc::now().to_rfc3339(),
            });
            if err.retryable && task.attempt < task.max_attempts {
                let delay = shared.topology.delay_for(task.attempt);
                let target = retry_queue_name(&queue, delay);
                let props = envelope::with_headers(
                    &delivery.properties,
                    [
                        (
                            HEADER_ATTEMPT,
                            AMQPValue::LongLongInt(i64::from(task.attempt) + 1),
                        ),
                        (HEADER_HISTORY, history_value(&history)),
                    ],
                );
                match publish_confirmed(&publisher, "", &target, &delivery.data, props).await {
                    Ok(()) => {
                        info!(task = %task.id, function = %function, attempt = task.attempt, delay_secs = delay, error = %err, "task failed; retry scheduled");
                        ack(&delivery).await;
                        metrics::counter!(m::JOBS_RETRIED, &labels).increment(1);
                    }
                    Err(e) => {
                        // Left unacked: the broker redelivers it and this attempt re-runs.
                        warn!(task = %task.id, error = %e, "could not schedule the retry; leaving the message for redelivery");
                    }
                }
            } else {
                let reason = if err.retryable {
                    "max_attempts"
                } else {
                    "permanent_error"
                };
                warn!(task = %task.id, function = %function, attempt = task.attempt, error = %err, reason, "task dead-lettered");
                let reply = Reply {
                    id: task.id.clone(),
                    ok: false,
                    result: Value::Null,
                    error: Some(ReplyError {
                        kind: err.kind.clone(),
                        message: err.message.clone(),
                    }),
                    attempt: task.attempt,
                };
                if dead_letter(
                    &queue,
                    &delivery,
                    &publisher,
                    &err,
                    reason,
                    &history,
                    task.attempt,
                )
                .await
                {
                    send_reply(&delivery, &publisher, &reply).await;
                    metrics::counter!(m::JOBS_DEAD_LETTERED, &labels).increment(1);
                }
            }
        }
    }
}

/// Runs the handler as its own task, under the timeout.
async fn execute(registry: &Registry, queue: &str, task: &Task) -> Result<Value, HandlerError> {
    let env = &task.envelope;
    let Some(handler) = registry.get(&env.function) else {
        return Err(registry.unknown(&env.function));
    };
    let ctx = JobContext::new(
        task.id.clone(),
        queue.to_string(),
        SOURCE,
        env.function.clone(),
        env.args.clone(),
        env.kwargs.clone(),
        task.attempt,
        None,
    );
    let join = tokio::spawn(handler.call(ctx));
    let abort = join.abort_handle();
    let joined = match task.timeout {
        Some(limit) => match tokio::time::timeout(limit, join).await {
            Ok(j) => j,
            Err(_) => {
                abort.abort();
                return Err(HandlerError::retryable(
                    "JobTimeoutException",
                    format!(
                        "Task exceeded maximum timeout value ({} seconds)",
                        limit.as_secs()
                    ),
                ));
            }
        },
        None => join.await,
    };
    match joined {
        Ok(result) => result,
        Err(e) => Err(HandlerError::retryable(
            "HandlerPanic",
            format!("handler panicked: {}", panic_message(e)),
        )),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

static ACK_FAILURES: AtomicU64 = AtomicU64::new(0);

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel died after we settled: the broker redelivers, the task re-runs.
        let n = ACK_FAILURES.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_power_of_two() {
            warn!(error = %e, "ack failed; the message will be redelivered");
        }
    }
}

/// Publishes the outcome to `reply_to`; false when the message must stay unacked (the
/// publish channel failed). A caller that went away (reply queue gone) is not our problem:
/// the task still counts as settled.
async fn send_reply(delivery: &Delivery, publisher: &Channel, reply: &Reply) -> bool {
    let Some(reply_to) = delivery.properties.reply_to() else {
        return true;
    };
    let body = match serde_json::to_vec(reply) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "reply not encodable; dropped");
            return true;
        }
    };
    let mut props = BasicProperties::default().with_content_type(CONTENT_TYPE.into());
    if let Ok(id) = ShortString::try_new(reply.id.as_str()) {
        props = props.with_message_id(id);
    }
    if let Some(cid) = delivery.properties.correlation_id() {
        props = props.with_correlation_id(cid.clone());
    }
    match publish_confirmed(publisher, "", reply_to.as_str(), &body, props).await {
        Ok(()) => true,
        Err(SdkAmqpError::Unroutable(q)) => {
            debug!(reply_to = %q, "reply queue is gone; caller stopped waiting");
            true
        }
        Err(e) => {
            warn!(error = %e, "could not publish the reply; leaving the message for redelivery");
            false
        }
    }
}

/// Publishes the body unchanged to `<queue>.dlq` with the error and history, then acks.
/// Returns whether the message is settled. If the DLQ route itself is missing, rejects
/// without requeue so the queue's own dead-letter arguments still keep the message.
async fn dead_letter(
    queue: &str,
    delivery: &Delivery,
    publisher: &Channel,
    err: &HandlerError,
    reason: &'static str,
    history: &[AttemptRecord],
    attempt: u32,
) -> bool {
    let props = envelope::with_headers(
        &delivery.properties,
        [
            (HEADER_ERROR, text(err.to_string())),
            (HEADER_DEAD_REASON, text(reason)),
            (HEADER_QUEUE, text(queue)),
            (HEADER_HISTORY, history_value(history)),
            (HEADER_ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
        ],
    );
    let dlq = dlq_name(queue);
    match publish_confirmed(publisher, DLX_EXCHANGE, &dlq, &delivery.data, props).await {
        Ok(()) => {
            ack(delivery).await;
            true
        }
        Err(e @ (SdkAmqpError::Unroutable(_) | SdkAmqpError::Nacked(_))) => {
            warn!(error = %e, "DLQ publish refused; rejecting to the queue's dead-letter exchange");
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            rejected.is_ok()
        }
        Err(e) => {
            warn!(error = %e, "could not dead-letter; leaving the message for redelivery");
            false
        }
    }
}
