//! Settle: how an AMQP task's outcome is recorded, always publish-then-ack so a crash in
//! between re-runs a task rather than losing it (at-least-once). What to do is
//! [`crate::core::decide`]'s, from the task's attempt of its maximum; this file applies it:
//! success → reply (if `reply_to`) → ack; retry → body unchanged to
//! `<queue>.retry.<delay>` with the next attempt and the history in headers → ack;
//! dead letter → `<queue>.dlq` with error, history and reason → error reply → ack.
//! Malformed bodies go straight to the DLQ. Acks are coalesced per channel
//! ([`super::acks`]). A task interrupted at the end of the shutdown grace is nacked with
//! requeue (the broker gives it to another consumer).

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
use crate::core::{
    Action, DeadReason, Executed, Labels, Outcome, Ready, RetryPlan, Source, UnitOfWork,
};
use crate::handler::{HandlerError, JobContext, Output, RawJob};

/// One delivery and where its outcome goes: the settle functions' shared arguments.
struct Settling<'a> {
    queue: &'a str,
    delivery: &'a Delivery,
    publisher: &'a Channel,
    acks: &'a Acks,
}

/// The unit of work of one delivery ([`UnitOfWork`]): parsed, run through the core,
/// settled. Never ends without either settling the message or leaving it for redelivery.
pub(super) struct AmqpUnit {
    shared: Arc<Shared>,
    queue: Arc<str>,
    delivery: Delivery,
    publisher: Channel,
    acks: Acks,
    /// The parsed task, or why the body is malformed.
    task: Result<Task, String>,
}

impl AmqpUnit {
    pub(super) fn new(
        shared: Arc<Shared>,
        queue: Arc<str>,
        delivery: Delivery,
        publisher: Channel,
        acks: Acks,
    ) -> Self {
        let task = envelope::parse(&delivery.data, &delivery.properties, shared.defaults);
        AmqpUnit {
            shared,
            queue,
            delivery,
            publisher,
            acks,
            task,
        }
    }

    fn task(&self) -> Option<&Task> {
        self.task.as_ref().ok()
    }
}

impl UnitOfWork for AmqpUnit {
    fn source(&self) -> Source {
        SOURCE
    }

    fn queue(&self) -> &str {
        &self.queue
    }

    fn rejected_function(&self) -> &'static str {
        "<malformed>"
    }

    fn job_id(&self) -> Option<&str> {
        match self.task() {
            Some(task) => Some(&task.id),
            None => self
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str()),
        }
    }

    fn ready(&mut self) -> Result<Ready, HandlerError> {
        let task = match &self.task {
            Ok(task) => task,
            Err(reason) => {
                warn!(%reason, "malformed message; dead-lettering");
                return Err(HandlerError::permanent("MalformedEnvelope", reason.clone()));
            }
        };
        let env = &task.envelope;
        let ctx = JobContext::new(
            task.id.clone(),
            self.queue.to_string(),
            SOURCE,
            env.function.clone(),
            env.args.clone(),
            env.kwargs.clone(),
            task.attempt,
            None,
        )
        .with_raw(RawJob {
            data: self.delivery.data.clone(),
            serializer: None,
            description: None,
            timeout: task.timeout,
        });
        // The enqueue time also serves the job history; the trace context only a traced
        // process reads.
        let producer = if crate::telemetry::enabled() {
            envelope::producer(&self.delivery.properties)
        } else {
            crate::telemetry::span::Producer {
                carrier: Default::default(),
                enqueued_at: envelope::enqueued_at(&self.delivery.properties),
            }
        };
        Ok(Ready {
            ctx,
            timeout: task.timeout,
            stop: None,
            producer,
        })
    }

    fn retry_plan(&self) -> RetryPlan {
        match self.task() {
            Some(task) => RetryPlan::Own {
                remaining: task.max_attempts.saturating_sub(task.attempt),
                delay_secs: self.shared.topology.delay_for(task.attempt) as f64,
            },
            None => RetryPlan::None,
        }
    }

    async fn apply(self, executed: Executed, action: Action) {
        let s = Settling {
            queue: &self.queue,
            delivery: &self.delivery,
            publisher: &self.publisher,
            acks: &self.acks,
        };
        let Some(task) = self.task() else {
            let labels = Labels::new(SOURCE, self.queue.to_string(), "<malformed>");
            let err = match executed.outcome {
                Outcome::Failed(err) => err,
                _ => HandlerError::permanent("MalformedEnvelope", "malformed message"),
            };
            if dead_letter(&s, &err, "malformed", &[], 1).await {
                labels.dead_lettered();
            }
            return;
        };
        let labels = Labels::new(
            SOURCE,
            self.queue.to_string(),
            task.envelope.function.clone(),
        );
        match (action, executed.outcome) {
            (Action::Finish, Outcome::Done(output)) => {
                debug!(task = %task.id, function = %labels.function, ms = executed.elapsed.as_millis() as u64, "task finished");
                let reply = Reply {
                    id: task.id.clone(),
                    ok: true,
                    result: output_value(output),
                    error: None,
                    attempt: task.attempt,
                };
                if send_reply(s.delivery, s.publisher, &reply).await {
                    s.acks.ack(s.delivery.delivery_tag);
                }
            }
            (Action::Retry { delay_secs, .. }, Outcome::Failed(err)) => {
                schedule_retry(&s, task, &labels, err, delay_secs).await
            }
            (Action::DeadLetter(reason), Outcome::Failed(err)) => {
                dead_letter_task(&s, task, &labels, err, reason).await
            }
            // Shutdown grace ran out (AMQP has no stop command): back to the broker, no
            // attempt spent.
            _ => {
                warn!(task = %task.id, "shutdown grace expired; task returned to the broker");
                if let Err(e) = s
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
                {
                    debug!(error = %e, "nack failed; the broker redelivers when the channel closes");
                }
                s.acks.released(s.delivery.delivery_tag);
            }
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

/// The attempt history with this failure appended.
fn history_with(task: &Task, err: &HandlerError) -> Vec<AttemptRecord> {
    let mut history = task.history.clone();
    history.push(AttemptRecord {
        attempt: task.attempt,
        kind: err.kind.clone(),
        message: err.message.clone(),
        at: chrono::Utc::now().to_rfc3339(),
    });
    history
}

/// Body unchanged to `<queue>.retry.<delay>` with the next attempt; acked once confirmed.
async fn schedule_retry(
    s: &Settling<'_>,
    task: &Task,
    labels: &Labels,
    err: HandlerError,
    delay: u64,
) {
    let history = history_with(task, &err);
    let target = retry_queue_name(s.queue, delay);
    let props = envelope::with_headers(
        &s.delivery.properties,
        [
            (
                HEADER_ATTEMPT,
                AMQPValue::LongLongInt(i64::from(task.attempt) + 1),
            ),
            (HEADER_HISTORY, history_value(&history)),
        ],
    );
    match publish_confirmed(s.publisher, "", &target, &s.delivery.data, props).await {
        Ok(()) => {
            info!(task = %task.id, function = %labels.function, attempt = task.attempt, delay_secs = delay, error = %err, "task failed; retry scheduled");
            s.acks.ack(s.delivery.delivery_tag);
            labels.retried();
        }
        Err(e) => {
            // Left unacked: the broker redelivers it and this attempt re-runs.
            warn!(task = %task.id, error = %e, "could not schedule the retry; leaving the message for redelivery");
        }
    }
}

/// To the DLQ with the history, then the error reply to the caller.
async fn dead_letter_task(
    s: &Settling<'_>,
    task: &Task,
    labels: &Labels,
    err: HandlerError,
    reason: DeadReason,
) {
    let history = history_with(task, &err);
    let reason = reason.as_str();
    warn!(task = %task.id, function = %labels.function, attempt = task.attempt, error = %err, reason, "task dead-lettered");
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
    if dead_letter(s, &err, reason, &history, task.attempt).await {
        send_reply(s.delivery, s.publisher, &reply).await;
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
async fn dead_letter(
    s: &Settling<'_>,
    err: &HandlerError,
    reason: &'static str,
    history: &[AttemptRecord],
    attempt: u32,
) -> bool {
    let (queue, delivery, acks) = (s.queue, s.delivery, s.acks);
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
    match publish_confirmed(s.publisher, DLX_EXCHANGE, &dlq, &delivery.data, props).await {
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
