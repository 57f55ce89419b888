//! AMQP dead letters. The worker's topology (`worker/src/amqp/topology.rs`) gives each work
//! queue `Q` a dead-letter queue `Q.dlq` (`mindora_sdk::amqp::dlq_name`); a dead letter
//! keeps its body byte for byte and carries `x-mindora-attempt` (the attempt it died on),
//! `x-mindora-history`, `x-mindora-error`, `x-mindora-dead-reason`, `x-mindora-queue`, and
//! RabbitMQ's own `x-death` when the broker dead-lettered it.
//!
//! Requeue is at-least-once, never lossy: each message is taken unacked, published to the
//! work queue with publisher confirms (mandatory, so an unroutable target fails), and only
//! then acked; on any failure it is nacked back to the DLQ and the run stops.

use lapin::options::{
    BasicGetOptions, BasicNackOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mindora_sdk::amqp::{
    dlq_name, publish_confirmed, HEADER_ATTEMPT, HEADER_DEAD_REASON, HEADER_ERROR,
};

use super::{ActionReport, DataError};

/// The most messages one requeue moves.
pub const MAX_REQUEUE: u32 = 10_000;

/// Headers a requeued message leaves behind: the death records, so the broker and the
/// worker count afresh.
const DEATH_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    HEADER_DEAD_REASON,
    HEADER_ERROR,
];

async fn connect(amqp_url: &str) -> Result<Connection, DataError> {
    Ok(Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("mindora-console".into()),
    )
    .await?)
}

/// Ready messages in each work queue's DLQ, as (DLQ name, count); a queue without a DLQ
/// is left out.
pub async fn dlq_summary(
    amqp_url: &str,
    queues: &[String],
) -> Result<Vec<(String, u32)>, DataError> {
    let conn = connect(amqp_url).await?;
    let mut out = Vec::new();
    for q in queues {
        let dlq = dlq_name(q);
        // A passive declare of a missing queue closes its channel: one channel each.
        let ch = conn.create_channel().await?;
        let declared = ch
            .queue_declare(
                dlq.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Ok(info) = declared {
            out.push((dlq, info.message_count()));
            let _ = ch.close(200, "done".into()).await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(out)
}

/// The properties a dead letter goes back with: death headers dropped, attempt reset to 1
/// (so it gets its full attempts again), the rest (history, trace context) kept.
fn requeued_properties(props: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = props.headers() {
        for (k, v) in old.inner() {
            if !DEATH_HEADERS.contains(&k.as_str()) && k.as_str() != HEADER_ATTEMPT {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert(ShortString::from(HEADER_ATTEMPT), AMQPValue::LongLongInt(1));
    props.clone().with_headers(headers)
}

/// Moves up to `limit` messages from `dlq_name` to `target_queue`, oldest first.
pub async fn dlq_requeue(
    amqp_url: &str,
    dlq_name: &str,
    target_queue: &str,
    limit: u32,
) -> Result<ActionReport, DataError> {
    let conn = connect(amqp_url).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // Only what is there now: a message that dies again while this runs is not moved twice.
    let waiting = ch
        .queue_declare(
            dlq_name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut report = ActionReport {
        done: 0,
        skipped: Vec::new(),
    };
    for _ in 0..limit.min(MAX_REQUEUE).min(waiting) {
        let Some(msg) = ch
            .basic_get(dlq_name.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = msg.delivery;
        let props = requeued_properties(&delivery.properties);
        match publish_confirmed(&ch, "", target_queue, &delivery.data, props).await {
            Ok(()) => {
                delivery.acker.ack(Default::default()).await?;
                report.done += 1;
            }
            Err(e) => {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| format!("delivery {}", delivery.delivery_tag));
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?;
                report.skipped.push((
                    id,
                    format!("not moved to {target_queue}: {e}; left in {dlq_name}"),
                ));
                break;
            }
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(report)
}
