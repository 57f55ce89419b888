//! Notify stage: tell the user a document is done or failed, on RabbitMQ (durable queue,
//! publisher confirms) and on a per-app Redis pub/sub channel.

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use mindora_sdk::connect::amqp::AmqpConnector;
use mindora_sdk::connect::{RedisConnector, RedisSettings, TlsFiles};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::PipelineConfig;
use crate::error::PipelineError;
use crate::model::App;
use crate::telemetry;

/// Where a notification went.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct NotifyReport {
    /// RabbitMQ queue it was confirmed on.
    pub amqp_queue: Option<String>,
    /// Redis channel it was published on, with the number of subscribers that received it.
    pub redis_channel: Option<(String, i64)>,
}

/// Sends notifications.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `message` (a JSON object) for `app`.
    async fn notify(&self, app: &App, message: &Value) -> Result<NotifyReport, PipelineError>;
}

/// Redis channel of an app's notifications: `mindora:<app>:notifications`, under the key
/// prefix like every mindora name (`<prefix>:mindora:...` when `RQ_KEY_PREFIX` is not `rq`).
pub fn redis_channel(app: &App) -> String {
    format!(
        "{}{}:notifications",
        mindora_sdk::wire::keys::mindora_prefix(),
        app.as_str()
    )
}

/// [`Notifier`] over RabbitMQ and/or Redis, each used when configured.
pub struct BrokerNotifier {
    queue: String,
    amqp: Mutex<Option<(Connection, Channel)>>,
    amqp_connector: Option<AmqpConnector>,
    redis: Option<RedisConnector>,
    redis_conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl BrokerNotifier {
    /// Connections are opened on first use and re-opened after a failure.
    pub fn from_config(config: &PipelineConfig) -> Result<Self, PipelineError> {
        // TLS, ACL and Sentinel settings come from MINDORA_NOTIFY_REDIS_* and
        // MINDORA_AMQP_{CA_FILE,CLIENT_CERT,CLIENT_KEY}, as for the worker's own connections.
        // An empty variable (a compose override switching a transport off) means unset.
        let set = |v: &Option<String>| {
            v.as_deref()
                .filter(|u| !u.trim().is_empty())
                .map(str::to_string)
        };
        let redis = match &set(&config.notify_redis_url) {
            Some(url) => Some(
                RedisConnector::new(&RedisSettings::from_url(url).with_env("MINDORA_NOTIFY_REDIS"))
                    .map_err(|e| PipelineError::Config(format!("MINDORA_NOTIFY_REDIS_URL: {e}")))?,
            ),
            None => None,
        };
        let amqp_connector = match &set(&config.amqp_url) {
            Some(url) => Some(
                AmqpConnector::new(url, &TlsFiles::from_env("MINDORA_AMQP"))
                    .map_err(|e| PipelineError::Config(format!("MINDORA_AMQP_URL: {e}")))?,
            ),
            None => None,
        };
        Ok(Self::new(
            config.notify_queue.clone(),
            amqp_connector,
            redis,
        ))
    }

    /// Notifications on `queue` through `amqp` and on the apps' channels through `redis`,
    /// each when given (built by the SDK's connect layer: TLS, ACL, Sentinel, several
    /// brokers), for programs that hold their settings in code rather than the environment.
    pub fn new(queue: String, amqp: Option<AmqpConnector>, redis: Option<RedisConnector>) -> Self {
        BrokerNotifier {
            queue,
            amqp: Mutex::new(None),
            amqp_connector: amqp,
            redis,
            redis_conn: Mutex::new(None),
        }
    }

    /// Whether any transport is configured.
    pub fn is_configured(&self) -> bool {
        self.amqp_connector.is_some() || self.redis.is_some()
    }

    /// Publishes inside a PRODUCER span `send <queue>`, its context in the message's AMQP
    /// headers (`traceparent`, `tracestate`) so the consumer of the notification continues
    /// the trace.
    async fn publish_amqp(
        &self,
        connector: &AmqpConnector,
        payload: &[u8],
    ) -> Result<(), PipelineError> {
        let span = telemetry::publish("rabbitmq", &self.queue);
        span.record("messaging.message.body.size", payload.len() as u64);
        telemetry::in_client(span, self.publish_amqp_now(connector, payload)).await
    }

    async fn publish_amqp_now(
        &self,
        connector: &AmqpConnector,
        payload: &[u8],
    ) -> Result<(), PipelineError> {
        let err = |what: &str, e: lapin::Error| {
            PipelineError::transient("RabbitMQ", format!("{what} ({}): {e}", self.queue))
        };
        let mut guard = self.amqp.lock().await;
        let usable = guard
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !usable {
            let conn = connector
                .connect(ConnectionProperties::default())
                .await
                .map_err(|e| err("connect", e))?;
            let channel = conn
                .create_channel()
                .await
                .map_err(|e| err("open channel", e))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| err("enable publisher confirms", e))?;
            channel
                .queue_declare(
                    self.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("declare queue", e))?;
            *guard = Some((conn, channel));
        }
        let Some((_, channel)) = guard.as_ref() else {
            return Err(PipelineError::transient("RabbitMQ", "no channel"));
        };
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(headers) = telemetry::amqp_headers() {
            properties = properties.with_headers(headers);
        }
        let result = async {
            channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    payload,
                    properties,
                )
                .await?
                .await
        }
        .await;
        match result {
            Ok(c) if c.is_ack() => Ok(()),
            Ok(_) => Err(PipelineError::transient(
                "RabbitMQ",
                format!("broker refused (nack) the notification on {}", self.queue),
            )),
            Err(e) => {
                *guard = None;
                Err(err("publish", e))
            }
        }
    }

    async fn publish_redis(
        &self,
        client: &RedisConnector,
        channel: &str,
        payload: &str,
    ) -> Result<i64, PipelineError> {
        let err = |e: redis::RedisError| {
            PipelineError::transient("Redis", format!("publish on {channel}: {e}"))
        };
        let mut guard = self.redis_conn.lock().await;
        if guard.is_none() {
            *guard = Some(client.multiplexed().await.map_err(err)?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(PipelineError::transient("Redis", "no connection"));
        };
        let result: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(conn)
            .await;
        match result {
            Ok(n) => Ok(n),
            Err(e) => {
                *guard = None;
                Err(err(e))
            }
        }
    }
}

#[async_trait]
impl Notifier for BrokerNotifier {
    async fn notify(&self, app: &App, message: &Value) -> Result<NotifyReport, PipelineError> {
        if !self.is_configured() {
            return Err(PipelineError::NotConfigured {
                what: "notifications",
                var: "MINDORA_AMQP_URL or MINDORA_NOTIFY_REDIS_URL",
            });
        }
        let payload = message.to_string();
        let mut report = NotifyReport::default();
        if let Some(connector) = &self.amqp_connector {
            self.publish_amqp(connector, payload.as_bytes()).await?;
            report.amqp_queue = Some(self.queue.clone());
        }
        if let Some(client) = &self.redis {
            let channel = redis_channel(app);
            // Redis pub/sub messages have no headers: the span is there, no context is sent.
            let span = telemetry::db("redis", "PUBLISH", &channel, "");
            let n =
                telemetry::in_client(span, self.publish_redis(client, &channel, &payload)).await?;
            report.redis_channel = Some((channel, n));
        }
        Ok(report)
    }
}
