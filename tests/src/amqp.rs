//! Shared fixture of the AMQP integration tests: a unique queue family per test (so tests
//! run in parallel and twice in a row), the worker's AMQP source running in-process, and
//! clean-up of everything the test declared.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use mindora_sdk::amqp::{AmqpClient, Envelope};
use mindora_worker::amqp::{declare_topology, run_amqp_observed, AmqpArgs, Topology};
use mindora_worker::core::Observer;
use mindora_worker::handler::{HandlerError, JobContext, Registry};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn url() -> String {
    std::env::var("MINDORA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// One call a recording handler saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub args: Vec<Value>,
    pub attempt: u32,
    pub at: Instant,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

pub fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

/// Builtins plus `test.record` (records, sleeps `kwargs.sleep_ms`), `test.flaky`
/// (records, fails every attempt) and `test.panic`.
pub fn registry(log: Log) -> Registry {
    let mut r = Registry::new();
    mindora_worker::builtins::register(&mut r);
    let l = log.clone();
    r.register("test.record", move |ctx: JobContext| {
        let l = l.clone();
        async move {
            let ms = ctx
                .kwargs
                .get("sleep_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            l.lock().unwrap().push(Seen {
                id: ctx.id.clone(),
                args: ctx.args.clone(),
                attempt: ctx.attempt,
                at: Instant::now(),
            });
            Ok(json!({"ok": ctx.args}))
        }
    });
    let l = log;
    r.register("test.flaky", move |ctx: JobContext| {
        let l = l.clone();
        async move {
            l.lock().unwrap().push(Seen {
                id: ctx.id.clone(),
                args: ctx.args.clone(),
                attempt: ctx.attempt,
                at: Instant::now(),
            });
            Err::<Value, _>(HandlerError::retryable(
                "ValueError",
                format!("flaky attempt {}", ctx.attempt),
            ))
        }
    });
    r.register("test.panic", |ctx: JobContext| async move {
        if ctx.attempt > 0 {
            panic!("boom in handler");
        }
        Ok(Value::Null)
    });
    r
}

pub struct Fixture {
    pub queue: String,
    pub args: AmqpArgs,
    pub conn: Connection,
    pub ch: Channel,
}

impl Fixture {
    /// A queue family `t_<name>_<random>` with 1 s / 2 s retry delays and 3 attempts,
    /// declared before the test publishes.
    pub async fn new(name: &str) -> Fixture {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let queue = format!("t_{name}_{suffix}");
        let mut args = AmqpArgs::new(url()).expect("the AMQP flags' defaults");
        args.queues = vec![queue.clone()];
        args.retry_delays = vec![1, 2];
        args.max_attempts = 3;
        args.declare_shared = false;
        args.depth_every_secs = 1;
        args.connection_name = format!("mindora-test-{queue}");
        declare_topology(&args).await.expect("declare topology");
        let conn = Connection::connect(
            &url(),
            ConnectionProperties::default()
                .with_connection_name(format!("test-client-{queue}").into()),
        )
        .await
        .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        Fixture {
            queue,
            args,
            conn,
            ch,
        }
    }

    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// Starts the worker's AMQP source in-process.
    pub fn start(&self, registry: Registry, concurrency: usize) -> Running {
        self.start_observed(registry, concurrency, None)
    }

    /// Starts the worker's AMQP source in-process, handing attempt records to `observer`.
    pub fn start_observed(
        &self,
        registry: Registry,
        concurrency: usize,
        observer: Option<Observer>,
    ) -> Running {
        let token = CancellationToken::new();
        let handle = tokio::spawn(run_amqp_observed(
            self.args.clone(),
            Arc::new(registry),
            concurrency,
            token.clone(),
            observer,
        ));
        Running { token, handle }
    }

    pub async fn client(&self) -> AmqpClient {
        AmqpClient::connect(&url())
            .await
            .expect("sdk connect")
            .with_queue(self.queue.clone())
    }

    pub async fn publish_env(&self, env: &Envelope) {
        let client = self.client().await;
        client.publish(&self.queue, env).await.expect("publish");
        client.close().await.ok();
    }

    /// Publishes raw bytes (for malformed-body tests).
    pub async fn publish_raw(&self, body: &[u8], props: BasicProperties) {
        self.ch
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Ready messages in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    /// Takes one message off `queue` (acked), waiting up to `timeout`.
    pub async fn get(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self
                .ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get");
            if m.is_some() || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes every queue the test declared.
    pub async fn cleanup(self) {
        let topology = Topology::from_args(&self.args).expect("topology");
        for q in topology.owned_queue_names() {
            let _ = self
                .ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

pub struct Running {
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<(), mindora_worker::amqp::AmqpError>>,
}

impl Running {
    /// Graceful stop; fails the test if it takes over 20 s or the source errored.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("AMQP source stops within 20 s")
            .expect("join")
            .expect("run_amqp result");
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond().await
}

/// A header as text.
pub fn header_text(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The broker's count of delivered-but-unacked messages of `queue`.
pub fn unacked(queue: &str) -> Option<u64> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(queue))
            .then(|| parts.next().and_then(|n| n.parse().ok()))
            .flatten()
    })
}

/// Forcibly closes the broker connections named `name` (as `rabbitmqctl
/// close_all_connections` would, but only this test's, so parallel tests are unaffected).
pub fn close_connections_named(name: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(&format!("\"{name}\""))) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: forced close"])
            .status()
            .expect("rabbitmqctl close_connection");
        if status.success() {
            closed += 1;
        }
    }
    closed
}
