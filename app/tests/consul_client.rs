//! The Consul client and watch loop against the local Consul stand-in, which validates every
//! request against Consul's documented HTTP API.

use std::time::{Duration, Instant};

use mindora_tests::consul::{Comeback, FakeConsul};
use mindora_worker_app::consul::client::ConsulError;
use mindora_worker_app::consul::registration::{service_id, Announced, Identity};
use mindora_worker_app::consul::watch::{watch_prefix, Snapshot};
use mindora_worker_app::consul::ConsulClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn identity(health_port: Option<u16>) -> Identity {
    Identity {
        service_id: service_id("host.1.abc"),
        worker_name: "host.1.abc".into(),
        address: "127.0.0.1".into(),
        health_port,
        sources: vec!["redis", "amqp"],
        version: "0.1.0".into(),
        check_interval: Duration::from_secs(2),
        deregister_after: Duration::from_secs(60),
    }
}

fn live() -> Announced {
    Announced {
        queues: vec!["high".into(), "default".into()],
        concurrency: 8,
    }
}

#[tokio::test]
async fn registration_bodies_match_the_agent_api() -> anyhow::Result<()> {
    let consul = FakeConsul::start(Some("t0k3n"))?;
    let client = ConsulClient::new(&consul.addr(), Some("t0k3n".into()))?;
    let http = identity(Some(9100)).registration(&live());
    client.register(&http).await?;
    assert!(client.service_known(&http.id).await?);
    let ttl = Identity {
        service_id: "mindora-worker-ttl".into(),
        ..identity(None)
    }
    .registration(&live());
    client.register(&ttl).await?;
    client.pass_check(&ttl.check.check_id).await?;
    assert_eq!(
        consul.check_status(&ttl.check.check_id).as_deref(),
        Some("passing")
    );
    client.deregister(&http.id).await?;
    assert!(!client.service_known(&http.id).await?);
    assert!(consul.violations().is_empty(), "{:?}", consul.violations());

    let anonymous = ConsulClient::new(&consul.addr(), None)?;
    match anonymous.register(&http).await {
        Err(ConsulError::Denied { status: 403, .. }) => {}
        other => panic!("expected an ACL denial, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn blocking_queries_wait_for_a_change() -> anyhow::Result<()> {
    let consul = FakeConsul::start(None)?;
    let client = ConsulClient::new(&consul.url(), None)?;
    let empty = client.kv_list("app/dev/", 0, Duration::ZERO).await?;
    assert!(empty.pairs.is_empty() && empty.index >= 1);
    consul.put("app/dev/a", "1");
    let first = client.kv_list("app/dev/", 0, Duration::ZERO).await?;
    assert_eq!(first.pairs.len(), 1);
    assert_eq!(first.pairs[0].value, b"1");

    // No change: the query holds for `wait`, then answers with the same index.
    let t = Instant::now();
    let same = client
        .kv_list("app/dev/", first.index, Duration::from_secs(1))
        .await?;
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(same.index, first.index);

    // A change under the prefix wakes it at once; one elsewhere does not count.
    let waiter = {
        let client = client.clone();
        let index = first.index;
        tokio::spawn(async move {
            client
                .kv_list("app/dev/", index, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    consul.put("other/x", "1");
    consul.put("app/dev/b", "2");
    let changed = waiter.await??;
    assert!(changed.index > first.index);
    assert_eq!(changed.pairs.len(), 2);
    assert!(consul.violations().is_empty(), "{:?}", consul.violations());
    Ok(())
}

async fn next(rx: &mut mpsc::Receiver<Snapshot>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .ok()
        .flatten()
        .map(|s| String::from_utf8_lossy(&s.pairs[0].value).into_owned())
}

#[tokio::test]
async fn the_watch_survives_restarts_and_an_index_reset() -> anyhow::Result<()> {
    let mut consul = FakeConsul::start(None)?;
    consul.put("mindora/dev/worker/concurrency", "8");
    let client = ConsulClient::new(&consul.addr(), None)?;
    let (tx, mut rx) = mpsc::channel::<Snapshot>(8);
    let stop = CancellationToken::new();
    tokio::spawn(watch_prefix(
        client,
        "mindora/dev/worker/".into(),
        None,
        Duration::from_secs(1),
        tx,
        stop.clone(),
    ));
    assert_eq!(next(&mut rx).await.as_deref(), Some("8"));
    consul.put("mindora/dev/worker/concurrency", "4");
    assert_eq!(next(&mut rx).await.as_deref(), Some("4"));
    // Down, changed meanwhile, back with every index renumbered from 1.
    let restarted = tokio::task::spawn_blocking(move || {
        consul.stop();
        std::thread::sleep(Duration::from_millis(500));
        consul.put("mindora/dev/worker/concurrency", "2");
        consul.restart(Comeback::ResetIndexes).map(|()| consul)
    })
    .await??;
    assert_eq!(next(&mut rx).await.as_deref(), Some("2"));
    stop.cancel();
    assert!(restarted.violations().is_empty());
    Ok(())
}
