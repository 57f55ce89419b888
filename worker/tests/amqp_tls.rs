//! `amqps://` with a CA file and a client certificate, and several brokers tried in turn.
//! The shared RabbitMQ on 5672 is left as it is: a private `stunnel4` (TLS-terminating
//! proxy, test CA generated here, client certificates required) runs in front of it, and
//! the worker's broker list starts with an address where nothing listens.

mod amqp_common;

use std::sync::Arc;
use std::time::Duration;

use amqp_common::*;
use lapin::ConnectionProperties;
use mindora_sdk::amqp::Envelope;
use mindora_sdk::connect::amqp::AmqpConnector;
use mindora_sdk::connect::TlsFiles;
use mindora_tests::servers::{free_port, start_stunnel, TestPki};
use mindora_worker::connect_args::AmqpTlsArgs;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_consumes_over_amqps_and_skips_a_dead_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    let (tls_port, dead_port) = (free_port().unwrap(), free_port().unwrap());
    let _proxy = start_stunnel(dir.path(), &pki, tls_port, 5672, true).unwrap();

    let mut fx = Fixture::new("tls").await;
    fx.args.url = Some(format!(
        "amqps://guest:guest@localhost:{dead_port}/%2f,amqps://guest:guest@localhost:{tls_port}/%2f"
    ));
    fx.args.tls = AmqpTlsArgs {
        ca_file: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    };
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
    worker.stop().await;
    assert_eq!(fx.depth(&fx.queue).await, 0, "every message was acked");

    // Without a client certificate the proxy refuses the handshake; with a CA that did not
    // sign the broker's certificate, we refuse it.
    let url = format!("amqps://guest:guest@localhost:{tls_port}/%2f");
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
            .is_err()
        }
    };
    assert!(
        refuse(TlsFiles {
            ca_file: Some(pki.ca.clone()),
            ..Default::default()
        })
        .await,
        "no client certificate"
    );
    assert!(
        refuse(TlsFiles {
            ca_file: Some(pki.other_ca.clone()),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
        })
        .await,
        "foreign CA"
    );
    fx.cleanup().await;
}
