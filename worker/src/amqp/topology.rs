//! The messaging topology, declared idempotently at every (re)connect.
//!
//! Every argument here must equal `infra/rabbitmq/definitions.json` (and
//! `definitions-app.json`): RabbitMQ refuses a re-declaration with different arguments
//! (`PRECONDITION_FAILED`): on a drift the `topology` subcommand fails and the AMQP source
//! consumes nothing (it logs the refusal at every reconnect try) rather than silently
//! building a second topology.
//!
//! Per work queue `Q`:
//! - `Q`: durable classic queue, `x-max-priority` (app queues: none), dead-lettering to
//!   `mindora.dlx` with routing key `Q.dlq` (used when the worker itself cannot).
//! - `Q.dlq`: durable, bound to `mindora.dlx` with keys `Q.dlq` and `Q`.
//! - `Q.retry.<d>` for each delay `d`: durable, `x-message-ttl = d s`, dead-lettering back
//!   to `Q` through the default exchange: delayed retries without the delayed-message
//!   plugin.
//!
//! Shared: `user_notifications` (durable queue), `system_events` (fanout),
//! `inter_app_communication` (topic; `{app}_internal_tasks` is bound with `{app}.#`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use mindora_sdk::amqp::{dlq_name, retry_queue_name, DLX_EXCHANGE};

use super::{AmqpArgs, AmqpError};

/// Queue for notifications to users (consumed by the notification service).
pub const USER_NOTIFICATIONS: &str = "user_notifications";
/// Fanout exchange for broadcasts every app receives.
pub const SYSTEM_EVENTS: &str = "system_events";
/// Topic exchange routing `{app}.…` keys to `{app}_internal_tasks`.
pub const INTER_APP: &str = "inter_app_communication";

/// The longest work-queue name: leaves room for `.retry.<delay>` within AMQP's 255 bytes.
const MAX_QUEUE_NAME: usize = 200;

/// One work queue's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkQueue {
    /// Queue name.
    pub name: String,
    /// `x-max-priority`, if a priority queue.
    pub max_priority: Option<u8>,
    /// Whether this worker consumes it (and so needs its retry queues).
    pub consumed: bool,
}

/// Everything the worker declares, derived from [`AmqpArgs`] so the subcommand, the
/// worker and the tests agree.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Work queues (consumed ones and app queues).
    pub queues: Vec<WorkQueue>,
    /// Retry delays in seconds, ascending as configured.
    pub retry_delays: Vec<u64>,
    /// Whether the shared exchanges and queues are declared too.
    pub shared: bool,
    /// App names (for the topic bindings).
    pub apps: Vec<String>,
}

/// The broker URL, or why the source is off.
pub(crate) fn url(args: &AmqpArgs) -> Result<&str, AmqpError> {
    args.url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| AmqpError::Config("--amqp-url / MINDORA_AMQP_URL is not set".into()))
}

fn valid_app(app: &str) -> bool {
    let mut chars = app.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn short(s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s).map_err(|_| AmqpError::Config(format!("{s:?} is too long for AMQP")))
}

impl Topology {
    /// Validates the settings and lists what to declare.
    pub fn from_args(args: &AmqpArgs) -> Result<Self, AmqpError> {
        let mut apps = Vec::new();
        for app in args.apps.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            if !valid_app(app) {
                return Err(AmqpError::Config(format!(
                    "invalid app name {app:?} (want [a-z][a-z0-9_]*)"
                )));
            }
            apps.push(app.to_string());
        }
        let app_queues: Vec<String> = apps.iter().map(|a| format!("{a}_internal_tasks")).collect();
        let consumed: Vec<String> = args
            .queues
            .iter()
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
        if consumed.is_empty() {
            return Err(AmqpError::Config("--amqp-queues names no queue".into()));
        }
        if args.retry_delays.is_empty() || args.retry_delays.contains(&0) {
            return Err(AmqpError::Config(
                "--amqp-retry-delays needs at least one delay, each >= 1 s".into(),
            ));
        }
        if args.max_attempts == 0 {
            return Err(AmqpError::Config("--amqp-max-attempts must be >= 1".into()));
        }
        let mut queues: Vec<WorkQueue> = Vec::new();
        for q in &consumed {
            if q.len() > MAX_QUEUE_NAME {
                return Err(AmqpError::Config(format!("queue name {q:?} is too long")));
            }
            if queues.iter().any(|w| &w.name == q) {
                continue;
            }
            let is_app = app_queues.contains(q);
            queues.push(WorkQueue {
                name: q.clone(),
                max_priority: (!is_app && args.max_priority > 0).then_some(args.max_priority),
                consumed: true,
            });
        }
        for q in app_queues {
            if !queues.iter().any(|w| w.name == q) {
                queues.push(WorkQueue {
                    name: q,
                    max_priority: None,
                    consumed: false,
                });
            }
        }
        Ok(Topology {
            queues,
            retry_delays: args.retry_delays.clone(),
            shared: args.declare_shared,
            apps,
        })
    }

    /// The consumed queues.
    pub fn consumed(&self) -> impl Iterator<Item = &WorkQueue> {
        self.queues.iter().filter(|q| q.consumed)
    }

    /// The delay after failed attempt `attempt` (1-based): the n-th delay, the last one
    /// repeating.
    pub fn delay_for(&self, attempt: u32) -> u64 {
        let i = (attempt.max(1) as usize - 1).min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays.get(i).copied().unwrap_or(1)
    }

    /// Every queue this topology owns per work queue (not the shared ones), e.g. for tests
    /// that clean up after themselves.
    pub fn owned_queue_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for q in &self.queues {
            out.push(q.name.clone());
            out.push(dlq_name(&q.name));
            if q.consumed {
                for d in &self.retry_delays {
                    out.push(retry_queue_name(&q.name, *d));
                }
            }
        }
        out
    }

    /// Declares everything; idempotent, and fails with `PRECONDITION_FAILED` if the broker
    /// has a same-named entity with other arguments.
    pub async fn declare(&self, ch: &Channel) -> Result<(), AmqpError> {
        let durable = QueueDeclareOptions::durable();
        let exchange_opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            short(DLX_EXCHANGE)?,
            ExchangeKind::Direct,
            exchange_opts,
            FieldTable::default(),
        )
        .await?;
        if self.shared || !self.apps.is_empty() {
            ch.exchange_declare(
                short(INTER_APP)?,
                ExchangeKind::Topic,
                exchange_opts,
                FieldTable::default(),
            )
            .await?;
        }
        if self.shared {
            ch.exchange_declare(
                short(SYSTEM_EVENTS)?,
                ExchangeKind::Fanout,
                exchange_opts,
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(short(USER_NOTIFICATIONS)?, durable, FieldTable::default())
                .await?;
        }
        for q in &self.queues {
            let dlq = dlq_name(&q.name);
            ch.queue_declare(short(&dlq)?, durable, FieldTable::default())
                .await?;
            for key in [dlq.as_str(), q.name.as_str()] {
                ch.queue_bind(
                    short(&dlq)?,
                    short(DLX_EXCHANGE)?,
                    short(key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            let mut work_args = FieldTable::default();
            work_args.insert("x-dead-letter-exchange".into(), long_string(DLX_EXCHANGE));
            work_args.insert("x-dead-letter-routing-key".into(), long_string(&dlq));
            if let Some(p) = q.max_priority {
                work_args.insert("x-max-priority".into(), AMQPValue::LongInt(i32::from(p)));
            }
            ch.queue_declare(short(&q.name)?, durable, work_args)
                .await?;
            if q.consumed {
                for d in &self.retry_delays {
                    let ttl_ms = i64::try_from(d.saturating_mul(1000)).unwrap_or(i64::MAX);
                    let mut retry_args = FieldTable::default();
                    retry_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
                    retry_args.insert("x-dead-letter-exchange".into(), long_string(""));
                    retry_args.insert("x-dead-letter-routing-key".into(), long_string(&q.name));
                    ch.queue_declare(short(&retry_queue_name(&q.name, *d))?, durable, retry_args)
                        .await?;
                }
            }
        }
        for app in &self.apps {
            ch.queue_bind(
                short(&format!("{app}_internal_tasks"))?,
                short(INTER_APP)?,
                short(&format!("{app}.#"))?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_queues_and_delays() {
        let mut args = AmqpArgs::new("amqp://x").unwrap();
        args.apps = vec!["billing".into(), " ".into()];
        args.queues = vec![
            "ai_processing_tasks".into(),
            "billing_internal_tasks".into(),
        ];
        let t = Topology::from_args(&args).unwrap();
        assert_eq!(t.queues.len(), 2);
        assert_eq!(t.queues[0].max_priority, Some(10));
        assert_eq!(t.queues[1].max_priority, None, "app queues are plain FIFO");
        assert_eq!(t.delay_for(1), 5);
        assert_eq!(t.delay_for(4), 625);
        assert_eq!(t.delay_for(9), 625);
        assert!(t
            .owned_queue_names()
            .contains(&"ai_processing_tasks.retry.125".to_string()));
        args.apps = vec!["Bad-App".into()];
        assert!(Topology::from_args(&args).is_err());
    }
}
