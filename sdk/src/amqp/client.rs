//! The publisher and request/reply client over lapin (feature `amqp`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wire::trace::TRACEPARENT;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{Map, Value};
use tokio::sync::{oneshot, OnceCell};

use super::message::*;

/// Errors of the AMQP client.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker refused, dropped the connection or failed an operation.
    #[error("amqp: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker nacked a publish (it did not take responsibility for the message).
    #[error("broker nacked the publish to {0:?}")]
    Nacked(String),
    /// A mandatory publish had no queue to go to (typo in the queue name, or the topology
    /// was not declared).
    #[error("no queue is bound for routing key {0:?}")]
    Unroutable(String),
    /// A name or id does not fit AMQP's 255-byte short strings.
    #[error("{0:?} is longer than 255 bytes")]
    TooLong(String),
    /// JSON encoding or decoding failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// No reply arrived in time.
    #[error("no reply to task {id} within {waited_ms} ms")]
    Timeout {
        /// Task id.
        id: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// The handler failed for good (after its retries).
    #[error("task {id} failed: {kind}: {message}")]
    Remote {
        /// Task id.
        id: String,
        /// Error kind.
        kind: String,
        /// Error message.
        message: String,
    },
    /// The reply consumer went away (connection closed).
    #[error("reply channel closed")]
    ReplyChannelClosed,
}

fn short(s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s).map_err(|_| AmqpError::TooLong(s.to_string()))
}

/// Extra AMQP properties for one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Queue the worker publishes the [`Reply`] to.
    pub reply_to: Option<String>,
    /// Correlation id echoed on the reply.
    pub correlation_id: Option<String>,
    /// Extra headers (string values).
    pub headers: Vec<(String, String)>,
}

/// The AMQP properties a task message carries, shared by the SDK and the worker's
/// republishes so both present messages identically to tools and Python consumers.
pub fn task_properties(
    env: &Envelope,
    opts: &PublishOptions,
) -> Result<BasicProperties, AmqpError> {
    let mut props = BasicProperties::default()
        .with_content_type(short(CONTENT_TYPE)?)
        .with_delivery_mode(2)
        .with_type(short(MESSAGE_TYPE)?)
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
    if !env.id.is_empty() {
        props = props.with_message_id(short(&env.id)?);
    }
    if let Some(p) = env.priority {
        props = props.with_priority(p);
    }
    if let Some(r) = &opts.reply_to {
        props = props.with_reply_to(short(r)?);
    }
    if let Some(c) = &opts.correlation_id {
        props = props.with_correlation_id(short(c)?);
    }
    if !opts.headers.is_empty() {
        let mut table = FieldTable::default();
        for (k, v) in &opts.headers {
            table.insert(short(k)?, AMQPValue::LongString(v.clone().into()));
        }
        props = props.with_headers(table);
    }
    Ok(props)
}

/// Publishes `body` on `channel` (which must be in confirm mode) and waits for the
/// broker's confirm; mandatory, so a message nobody would receive is an error, not a loss.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            short(exchange)?,
            short(routing_key)?,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Nack(_) => Err(AmqpError::Nacked(routing_key.to_string())),
        Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(routing_key.to_string())),
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

struct ReplyQueue {
    name: String,
    pending: Pending,
}

/// A publisher (and RPC caller) on one AMQP connection; cheap to share behind an `Arc`.
pub struct AmqpClient {
    conn: Connection,
    channel: Channel,
    queue: String,
    replies: OnceCell<ReplyQueue>,
}

impl std::fmt::Debug for AmqpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpClient")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl AmqpClient {
    /// Connects and puts a channel in confirm mode; [`call`](Self::call) targets
    /// [`DEFAULT_QUEUE`] until [`with_queue`](Self::with_queue) says otherwise.
    pub async fn connect(url: &str) -> Result<Self, AmqpError> {
        let conn = Connection::connect(
            url,
            ConnectionProperties::default().with_connection_name("mindora-sdk".into()),
        )
        .await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(AmqpClient {
            conn,
            channel,
            queue: DEFAULT_QUEUE.to_string(),
            replies: OnceCell::new(),
        })
    }

    /// Targets `queue` with [`call`](Self::call) and [`enqueue`](Self::enqueue).
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The queue [`call`](Self::call) and [`enqueue`](Self::enqueue) publish to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Publishes `env` to `queue` (default exchange) and returns once the broker confirmed
    /// it: after `Ok`, the message is the broker's to keep.
    pub async fn publish(&self, queue: &str, env: &Envelope) -> Result<(), AmqpError> {
        self.publish_with(queue, env, &PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with `reply_to`, `correlation_id` or headers.
    pub async fn publish_with(
        &self,
        queue: &str,
        env: &Envelope,
        opts: &PublishOptions,
    ) -> Result<(), AmqpError> {
        env.validate().map_err(|reason| AmqpError::Remote {
            id: env.id.clone(),
            kind: "InvalidEnvelope".into(),
            message: reason,
        })?;
        let body = serde_json::to_vec(env)?;
        // The caller's trace context rides in the headers (as pika's and Celery's
        // instrumentations send it), unless the caller set its own.
        let mut opts = opts.clone();
        if !opts.headers.iter().any(|(k, _)| k == TRACEPARENT) {
            opts.headers.extend(crate::trace::current());
        }
        let props = task_properties(env, &opts)?;
        publish_confirmed(&self.channel, "", queue, &body, props).await
    }

    /// Fire-and-forget `function(*args, **kwargs)` on this client's queue; returns the
    /// envelope sent (its `id` identifies the task in logs and the DLQ).
    pub async fn enqueue(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Envelope, AmqpError> {
        let env = Envelope::new(function, args).with_kwargs(kwargs);
        self.publish(&self.queue, &env).await?;
        Ok(env)
    }

    /// Runs `function(*args, **kwargs)` on a worker and waits up to `timeout` for its
    /// result; a handler failure (after retries) comes back as [`AmqpError::Remote`].
    pub async fn call(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, AmqpError> {
        let env = Envelope::new(function, args).with_kwargs(kwargs);
        self.call_envelope(&self.queue, env, timeout).await
    }

    /// [`call`](Self::call) with a full envelope (priority, attempts) and queue.
    pub async fn call_envelope(
        &self,
        queue: &str,
        env: Envelope,
        timeout: Duration,
    ) -> Result<Value, AmqpError> {
        let replies = self
            .replies
            .get_or_try_init(|| self.open_reply_queue())
            .await?;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&replies.pending).insert(correlation_id.clone(), tx);
        let opts = PublishOptions {
            reply_to: Some(replies.name.clone()),
            correlation_id: Some(correlation_id.clone()),
            headers: Vec::new(),
        };
        if let Err(e) = self.publish_with(queue, &env, &opts).await {
            lock(&replies.pending).remove(&correlation_id);
            return Err(e);
        }
        let started = std::time::Instant::now();
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(AmqpError::ReplyChannelClosed),
            Err(_) => {
                lock(&replies.pending).remove(&correlation_id);
                return Err(AmqpError::Timeout {
                    id: env.id,
                    waited_ms: started.elapsed().as_millis(),
                });
            }
        };
        if reply.ok {
            Ok(reply.result)
        } else {
            let err = reply.error.unwrap_or(ReplyError {
                kind: "Unknown".into(),
                message: "worker sent no error details".into(),
            });
            Err(AmqpError::Remote {
                id: reply.id,
                kind: err.kind,
                message: err.message,
            })
        }
    }

    /// An exclusive server-named queue for this client's replies, read by one task that
    /// routes each reply to its caller by correlation id.
    async fn open_reply_queue(&self) -> Result<ReplyQueue, AmqpError> {
        let channel = self.conn.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = queue.name().to_string();
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            // Keeps the channel alive as long as the consumer runs.
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let Some(cid) = delivery.properties.correlation_id().clone() else {
                    tracing::warn!("reply without correlation_id ignored");
                    continue;
                };
                let reply = match serde_json::from_slice::<Reply>(&delivery.data) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable reply ignored");
                        continue;
                    }
                };
                if let Some(tx) = lock(&routes).remove(cid.as_str()) {
                    let _ = tx.send(reply);
                }
            }
            // Callers still waiting learn the channel is gone.
            lock(&routes).clear();
        });
        Ok(ReplyQueue { name, pending })
    }

    /// Closes the connection cleanly (pending confirms are settled by then).
    pub async fn close(&self) -> Result<(), AmqpError> {
        self.conn.close(200, "bye".into()).await?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-insert; the map stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
