//! Sentinel's failover events (`+try-failover`, `+promoted-slave`, `+switch-master`, the
//! aborts), heard on every Sentinel's pub/sub. Polling where the master is leaves a window
//! of up to a poll period in which the old master, still taking writes, records claims and
//! outcomes the promoted replica never sees (jobs run twice, or sit in the new master's
//! started registry). With the events a [`super::RedisConn`] holds its commands from the
//! moment a failover starts and sends them to the promoted replica as soon as it is named.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

/// Where a failover of our master stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// None under way (or the last one was aborted or timed out).
    Stable,
    /// A Sentinel started one: the old master may still take writes the new one will lack.
    Started,
    /// This replica (`host:port`) was promoted: the master to use from now on.
    Promoted(String),
}

/// The event channels listened to (Sentinel's own names).
const CHANNELS: [&str; 5] = [
    "+try-failover",
    "+promoted-slave",
    "+switch-master",
    "+failover-end-for-timeout",
    "-failover-abort-*",
];

/// How often the Sentinels are asked for the other Sentinels of the master.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);

/// Starts one listener per Sentinel, those configured and those they know of (`SENTINEL
/// SENTINELS`: a failover's first events come only from the Sentinel leading it, which
/// may not be one the worker was given); they end when every receiver is dropped.
pub(super) fn spawn(sentinels: Vec<redis::Client>, master: String) -> watch::Receiver<Phase> {
    let (tx, rx) = watch::channel(Phase::Stable);
    let mut known = std::collections::HashSet::new();
    for client in &sentinels {
        known.insert(client.get_connection_info().addr().to_string());
        start_listener(client.clone(), master.clone(), tx.clone());
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = discover(sentinels, master, tx.clone(), known) => {}
            _ = tx.closed() => {}
        }
    });
    rx
}

fn start_listener(client: redis::Client, master: String, tx: watch::Sender<Phase>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = listen(&client, &master, &tx) => {}
            _ = tx.closed() => {}
        }
    });
}

/// Listens to the Sentinels the configured ones know of, too (same TLS and credentials).
async fn discover(
    configured: Vec<redis::Client>,
    master: String,
    tx: watch::Sender<Phase>,
    mut known: std::collections::HashSet<String>,
) {
    loop {
        for client in &configured {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let others: Vec<std::collections::HashMap<String, String>> =
                match redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(&master)
                    .query_async(&mut conn)
                    .await
                {
                    Ok(o) => o,
                    Err(_) => continue,
                };
            for other in others {
                let (Some(ip), Some(port)) = (
                    other.get("ip"),
                    other.get("port").and_then(|p| p.parse::<u16>().ok()),
                ) else {
                    continue;
                };
                if !known.insert(format!("{ip}:{port}")) {
                    continue;
                }
                let info = client.get_connection_info().clone();
                let addr = match info.addr() {
                    redis::ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => redis::ConnectionAddr::TcpTls {
                        host: ip.clone(),
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => redis::ConnectionAddr::Tcp(ip.clone(), port),
                };
                if let Ok(found) = redis::Client::open(info.set_addr(addr)) {
                    tracing::debug!(sentinel = %format!("{ip}:{port}"), "listening to another Sentinel's failover events");
                    start_listener(found, master.clone(), tx.clone());
                }
            }
        }
        tokio::time::sleep(DISCOVER_EVERY).await;
    }
}

/// Listens to one Sentinel, reconnecting (this Sentinel may be down for a while).
async fn listen(client: &redis::Client, master: &str, tx: &watch::Sender<Phase>) {
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in CHANNELS {
                pubsub.psubscribe(channel).await?;
            }
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = msg.get_payload().unwrap_or_default();
                if let Some(phase) = parse(msg.get_channel_name(), &payload, master) {
                    tracing::debug!(event = msg.get_channel_name(), %payload, "Sentinel failover event");
                    tx.send_if_modified(|p| {
                        let changed = *p != phase;
                        *p = phase;
                        changed
                    });
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(e) = session.await {
            tracing::debug!(error = %e, "Sentinel event channel lost; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The phase an event announces for `master`, if it is about it.
fn parse(channel: &str, payload: &str, master: &str) -> Option<Phase> {
    let f: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        // "master <name> <ip> <port> ..."
        "+try-failover" if f.get(1) == Some(&master) => Some(Phase::Started),
        // "slave <ip:port> <ip> <port> @ <master> <master ip> <master port>"
        "+promoted-slave" if f.get(5) == Some(&master) => {
            Some(Phase::Promoted(format!("{}:{}", f.get(2)?, f.get(3)?)))
        }
        // "<master> <old ip> <old port> <new ip> <new port>"
        "+switch-master" if f.first() == Some(&master) => {
            Some(Phase::Promoted(format!("{}:{}", f.get(3)?, f.get(4)?)))
        }
        c if (c.starts_with("-failover-abort") || c == "+failover-end-for-timeout")
            && f.get(1) == Some(&master) =>
        {
            Some(Phase::Stable)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_our_master_only() {
        let m = "mymaster";
        assert_eq!(
            parse("+try-failover", "master mymaster 127.0.0.1 6380", m),
            Some(Phase::Started)
        );
        assert_eq!(
            parse("+try-failover", "master other 127.0.0.1 6380", m),
            None
        );
        assert_eq!(
            parse(
                "+promoted-slave",
                "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6380",
                m
            ),
            Some(Phase::Promoted("127.0.0.1:6381".into()))
        );
        assert_eq!(
            parse(
                "+switch-master",
                "mymaster 127.0.0.1 6380 127.0.0.1 6381",
                m
            ),
            Some(Phase::Promoted("127.0.0.1:6381".into()))
        );
        assert_eq!(
            parse(
                "-failover-abort-not-elected",
                "master mymaster 127.0.0.1 6380",
                m
            ),
            Some(Phase::Stable)
        );
    }
}
