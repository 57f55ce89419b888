//! `amqps://` against a real RabbitMQ TLS listener: a private node (Debian's
//! `rabbitmq-server`, own node name and ports, test CA generated here) with a plain
//! listener and a TLS listener that verifies client certificates (`verify_peer`,
//! `fail_if_no_peer_cert`). The shared broker on 5672 is left alone.
//!
//! - The worker's AMQP source consumes over amqps with a CA file and a client certificate;
//!   its broker list starts with an address where nothing listens, and after the broker
//!   closes its connection it reconnects through the list in turn.
//! - No client certificate, or a CA that did not sign the broker's: refused, and told
//!   apart from a broker that is down (a setting to fix, not a reason to retry).
//! - The worker binary started with a wrong CA exits with the reason instead of retrying.
//! - The pipelines' notifier publishes one notification over amqps.
//! - Prints the worker's throughput over TLS against plain AMQP on the same node (no
//!   timing assertion).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use lapin::ConnectionProperties;
use mindora_pipelines::model::App;
use mindora_pipelines::notify::{BrokerNotifier, Notifier};
use mindora_sdk::amqp::Envelope;
use mindora_sdk::connect::amqp::{is_config_error, AmqpConnector};
use mindora_sdk::connect::TlsFiles;
use mindora_tests::amqp::*;
use mindora_tests::servers::{free_port, start_rabbitmq, RabbitNode, TestPki};
use mindora_tests::{worker_binary, RedisDb};
use mindora_worker::connect_args::AmqpTlsArgs;
use serde_json::json;

fn tls_args(pki: &TestPki) -> AmqpTlsArgs {
    AmqpTlsArgs {
        ca_file: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    }
}

#[test]
fn amqps_against_a_native_rabbitmq_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    let node = start_rabbitmq(dir.path(), &pki).unwrap();
    // The fixture's own connections (declare, publish, inspect) go to the private node's
    // plain listener; set before any thread reads the environment.
    std::env::set_var("MINDORA_TEST_AMQP_URL", node.url());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            consume_reconnect_and_refuse(&node, &pki).await;
            binary_exits_on_a_wrong_ca(&node, &pki);
            notification_over_amqps(&node, &pki).await;
            throughput_tls_vs_plain(&node, &pki).await;
        });
}

async fn consume_reconnect_and_refuse(node: &RabbitNode, pki: &TestPki) {
    let dead_port = free_port().unwrap();
    let mut fx = Fixture::new("tls").await;
    fx.args.url = Some(format!(
        "amqps://guest:guest@localhost:{dead_port}/%2f,{}",
        node.tls_url()
    ));
    fx.args.tls = tls_args(pki);
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 4);
    for i in 0..20 {
        fx.publish_env(&Envelope::new("test.record", vec![json!(i)]))
            .await;
    }
    assert!(
        wait_until(Duration::from_secs(30), || async { seen(&log).len() >= 20 }).await,
        "all 20 handled over amqps, saw {}",
        seen(&log).len()
    );
    // The broker closes the worker's connection: it reconnects, trying the dead address
    // first (the one after the broker that served it last), then the live one.
    let listed = node
        .ctl(&["list_connections", "pid", "client_properties", "--quiet"])
        .unwrap();
    let pid = listed
        .lines()
        .find(|l| l.contains(&fx.args.connection_name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("worker connection not listed:\n{listed}"))
        .to_string();
    node.ctl(&["close_connection", &pid, "test: forced reconnect"])
        .unwrap();
    for i in 20..40 {
        fx.publish_env(&Envelope::new("test.record", vec![json!(i)]))
            .await;
    }
    assert!(
        wait_until(Duration::from_secs(60), || async { seen(&log).len() >= 40 }).await,
        "all 40 handled after the reconnect, saw {}",
        seen(&log).len()
    );
    worker.stop().await;
    assert_eq!(fx.depth(&fx.queue).await, 0, "every message was acked");

    // Without a client certificate the broker refuses the handshake; with a CA that did
    // not sign the broker's certificate, we refuse it. Both are settings to fix.
    let url = node.tls_url();
    let refuse = |files: TlsFiles| {
        let url = url.clone();
        async move {
            let c = AmqpConnector::new(&url, &files).unwrap();
            tokio::time::timeout(
                Duration::from_secs(20),
                c.connect(ConnectionProperties::default()),
            )
            .await
            .expect("connect must not hang")
            .expect_err("the connection must be refused")
        }
    };
    let no_cert = refuse(TlsFiles {
        ca_file: Some(pki.ca.clone()),
        ..Default::default()
    })
    .await;
    eprintln!(
        "no client certificate: {no_cert} (config error: {})",
        is_config_error(&no_cert)
    );
    let foreign = refuse(TlsFiles {
        ca_file: Some(pki.other_ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    })
    .await;
    assert!(is_config_error(&foreign), "foreign CA: {foreign}");
    let down = AmqpConnector::new(
        &format!("amqps://guest:guest@localhost:{dead_port}/%2f"),
        &TlsFiles::default(),
    )
    .unwrap()
    .connect(ConnectionProperties::default())
    .await
    .expect_err("nothing listens there");
    assert!(
        !is_config_error(&down),
        "a broker that is down is transient: {down}"
    );
    let wrong_password = AmqpConnector::new(
        &node.url().replace("guest:guest", "guest:nope"),
        &TlsFiles::default(),
    )
    .unwrap()
    .connect(ConnectionProperties::default())
    .await
    .expect_err("a wrong password is refused");
    assert!(
        is_config_error(&wrong_password),
        "refused credentials are a setting to fix: {wrong_password:?}"
    );
    fx.cleanup().await;
}

/// The binary with a CA that did not sign the broker's certificate stops with the reason.
fn binary_exits_on_a_wrong_ca(node: &RabbitNode, pki: &TestPki) {
    let db = RedisDb::lease().unwrap();
    let queue = format!(
        "t_badca_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let started = Instant::now();
    let mut child = Command::new(worker_binary().unwrap())
        .arg("--redis-url")
        .arg(db.url())
        .args(["--name", "w-bad-amqp-ca", "--amqp-url"])
        .arg(node.tls_url())
        .args(["--amqp-queues", queue.as_str(), "--amqp-ca-file"])
        .arg(&pki.other_ca)
        .arg("--amqp-client-cert")
        .arg(&pki.client_cert)
        .arg("--amqp-client-key")
        .arg(&pki.client_key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the worker kept retrying a certificate it cannot verify");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "must exit non-zero");
    assert!(
        stderr.contains("invalid AMQP settings") && stderr.to_lowercase().contains("certificate"),
        "clear reason expected, got:\n{stderr}"
    );
    eprintln!(
        "bad AMQP CA: exited with {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn notification_over_amqps(node: &RabbitNode, pki: &TestPki) {
    let queue = format!(
        "t_notify_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let connector = AmqpConnector::new(
        &node.tls_url(),
        &TlsFiles {
            ca_file: Some(pki.ca.clone()),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
        },
    )
    .unwrap();
    let notifier = BrokerNotifier::new(queue.clone(), Some(connector), None);
    let app = App::parse("tlsapp").unwrap();
    let message = json!({"document": "d-1", "status": "done"});
    let report = notifier.notify(&app, &message).await.unwrap();
    assert_eq!(report.amqp_queue.as_deref(), Some(queue.as_str()));
    let conn = lapin::Connection::connect(&node.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the notification is on the queue");
    let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(body, message);
    let _ = conn.close(200, "done".into()).await;
}

/// Drains `n` messages with the in-process AMQP source over `url`; returns messages/s.
async fn drain(n: usize, name: &str, url: String, tls: AmqpTlsArgs) -> f64 {
    let mut fx = Fixture::new(name).await;
    let client = fx.client().await;
    for i in 0..n {
        client
            .publish(&fx.queue, &Envelope::new("test.record", vec![json!(i)]))
            .await
            .unwrap();
    }
    client.close().await.ok();
    fx.args.url = Some(url);
    fx.args.tls = tls;
    let log: Log = Arc::default();
    let started = Instant::now();
    let worker = fx.start(registry(log.clone()), 32);
    assert!(
        wait_until(Duration::from_secs(120), || async { seen(&log).len() >= n }).await,
        "{name}: {} of {n} handled",
        seen(&log).len()
    );
    let rate = n as f64 / started.elapsed().as_secs_f64();
    worker.stop().await;
    fx.cleanup().await;
    rate
}

async fn throughput_tls_vs_plain(node: &RabbitNode, pki: &TestPki) {
    if !mindora_tests::figures_wanted() {
        // The suite checks both paths drain; the figures come from tests/scale/bench.sh.
        drain(200, "plain", node.url(), AmqpTlsArgs::default()).await;
        drain(200, "tls", node.tls_url(), tls_args(pki)).await;
        return;
    }
    let n = 2000;
    drain(200, "warm", node.url(), AmqpTlsArgs::default()).await;
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    // Alternated, so a burst of load from elsewhere on the machine hits both alike.
    for round in 0..2 {
        plain.push(
            drain(
                n,
                &format!("plain{round}"),
                node.url(),
                AmqpTlsArgs::default(),
            )
            .await,
        );
        tls.push(drain(n, &format!("tls{round}"), node.tls_url(), tls_args(pki)).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "FIGURES amqp-tls: {n} messages x 2 rounds, concurrency 32, same private RabbitMQ node: \
         plain {:.0} msg/s ({}), TLS {:.0} msg/s ({}), TLS/plain {:.2}",
        mean(&plain),
        plain
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        mean(&tls),
        tls.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        mean(&tls) / mean(&plain)
    );
}
