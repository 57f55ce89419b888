//! Settle: how an AMQP task's outcome is recorded, always publish-then-ack so a crash in
//! between re-runs a task rather than losing it (at-least-once): success → reply (if
//! `reply_to`) → ack; retryable failure with attempts left → body unchanged to
//! `<queue>.retry.<delay>` with the next attempt and the history in headers → ack;
//! otherwise → `<queue>.dlq` with error, history and reason → error reply → ack. Malformed
//! bodies go straight to the DLQ. Acks are coalesced per channel ([`super::acks`]). A task interrupted at the end of the shutdown grace is
//! nacked with requeue (the broker gives it to another consumer).

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel};
use mindora_sdk::amqp::{
    dlq_name, publish_confirmed, retry_queue_name, AmqpError as SdkAmqpError, AttemptRecord, Reply,
    ReplyError, CONTENT_TYPE, DLX_EXCHANGE, HEADER_ATTEMPT, HEADER_DEAD_REASON, HEADER_ERROR,
    HEADER_HISTORY, HEADER_QUEUE,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::acks::Acks;
use super::consumer::{Shared, SOURCE};
use super::envelope::{self, history_value, text, Task};
use crate::core::{Core, Labels, Outcome};
use crate::handler::{HandlerError, JobContext, Output, RawJob};

/// The unit of work of one delivery: parse, run through the core, settle. Never returns
/// without either settling the message or leaving it for redelivery.
pub(super) async fn process(
    core: Arc<Core>,
    shared: Arc<Shared>,
    queue: Arc<str>,
    delivery: Delivery,
    publisher: Channel,
    acks: Acks,
) {
    let task = match envelope::parse(&delivery.data, &delivery.properties, shared.defaults) {
        Ok(t) => t,
        Err(reason) => {
            let labels = Labels::new(SOURCE, queue.to_string(), "<malformed>");
            labels.rejected();
            warn!(%reason, "malformed message; dead-lettering");
            let err = HandlerError::permanent("MalformedEnvelope", reason);
            if dead_letter(
                &queue,
                &delivery,
                &publisher,
                &acks,
                &err,
                "malformed",
                &[],
                1,
            )
            .await
            {
                labels.dead_lettered();
            }
            return;
        }
    };
    let env = &task.envelope;
    let labels = Labels::new(SOURCE, queue.to_string(), env.function.clone());
    let ctx = JobContext::new(
        task.id.clone(),
        queue.to_string(),
        SOURCE,
        env.function.clone(),
        env.args.clone(),
        env.kwargs.clone(),
        task.attempt,
        None,
    )
    .with_raw(RawJob {
        data: delivery.data.clone(),
        serializer: None,
        description: None,
        timeout: task.timeout,
    });
    let executed = core.execute(ctx, task.timeout, None).await;
    match executed.outcome {
        Outcome::Done(output) => {
            debug!(task = %task.id, function = %labels.function, ms = executed.elapsed.as_millis() as u64, "task finished");
            let reply = Reply {
                id: task.id.clone(),
                ok: true,
                result: output_value(output),
                error: None,
                attempt: task.attempt,
            };
            if send_reply(&delivery, &publisher, &reply).await {
                acks.ack(delivery.delivery_tag);
            }
        }
        Outcome::Failed(err) => {
            settle_failure(
                &shared, &queue, &delivery, &publisher, &acks, &task, &labels, err,
            )
            .await
        }
        Outcome::Interrupted(_) => {
            // Shutdown grace ran out: back to the broker, no attempt spent.
            warn!(task = %task.id, "shutdown grace expired; task returned to the broker");
            if let Err(e) = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
            {
                debug!(error = %e, "nack failed; the broker redelivers when the channel closes");
            }
            acks.released(delivery.delivery_tag);
        }
    }
}

/// A return value for the JSON reply: serialized output is JSON or, failing that, text.
fn output_value(output: Output) -> Value {
    match output {
        Output::Value(v) => v,
        Output::Serialized(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    }
}

/// Retry queue or DLQ.
#[allow(clippy::too_many_arguments)]
async fn settle_failure(
    shared: &Shared,
    queue: &str,
    delivery: &Delivery,
    publisher: &Channel,
    acks: &Acks,
    task: &Task,
    labels: &Labels,
    err: HandlerError,
) {
    let function = labels.function.as_str();
    let mut history = task.history.clone();
    history.push(AttemptRecord {
        attempt: task.attempt,
        kind: err.kind.clone(),
        message: err.message.clone(),
        at: chrono::Utc::now().to_rfc3339(),
    });
    if err.retryable && task.attempt < task.max_attempts {
        let delay = shared.topology.delay_for(task.attempt);
        let target = retry_queue_name(queue, delay);
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
        match publish_confirmed(publisher, "", &target, &delivery.data, props).await {
            Ok(()) => {
                info!(task = %task.id, function, attempt = task.attempt, delay_secs = delay, error = %err, "task failed; retry scheduled");
                acks.ack(delivery.delivery_tag);
                labels.retried();
            }
            Err(e) => {
                // Left unacked: the broker redelivers it and this attempt re-runs.
                warn!(task = %task.id, error = %e, "could not schedule the retry; leaving the message for redelivery");
            }
        }
        return;
    }
    let reason = if err.retryable {
        "max_attempts"
    } else {
        "permanent_error"
    };
    warn!(task = %task.id, function, attempt = task.attempt, error = %err, reason, "task dead-lettered");
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
        queue,
        delivery,
        publisher,
        acks,
        &err,
        reason,
        &history,
        task.attempt,
    )
    .await
    {
        send_reply(delivery, publisher, &reply).await;
        labels.dead_lettered();
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
/// Returns whether the message reached a dead-letter queue (only then does it count as
/// dead-lettered). If the DLQ route itself is missing, rejects without requeue so the
/// queue's own dead-letter arguments still keep the message.
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    queue: &str,
    delivery: &Delivery,
    publisher: &Channel,
    acks: &Acks,
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
            acks.ack(delivery.delivery_tag);
            true
        }
        Err(e @ (SdkAmqpError::Unroutable(_) | SdkAmqpError::Nacked(_))) => {
            warn!(error = %e, "DLQ publish refused; rejecting to the queue's dead-letter exchange");
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            acks.released(delivery.delivery_tag);
            rejected.is_ok()
        }
        Err(e) => {
            warn!(error = %e, "could not dead-letter; leaving the message for redelivery");
            false
        }
    }
}
