//! Watching KV prefixes with Consul blocking queries.
//!
//! Each prefix has its own long poll (`?recurse&index=N&wait=…`). As Consul's documentation
//! asks: the index from `X-Consul-Index` is only a cursor (an answer may carry no change, so
//! values are compared before anything is reported); an index that goes backwards (snapshot
//! restore, a new cluster) resets the cursor to 0 for a fresh read; an index of 0 is never
//! blocked on (it would answer at once), so it is raised to 1; and answers are rate-limited.
//! While Consul is away the loop backs off exponentially with jitter and never gives up.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::client::{ConsulClient, ConsulError, KvListing, KvPair};

/// The full content of one prefix after a change.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The prefix watched.
    pub prefix: String,
    /// Every key under it.
    pub pairs: Vec<KvPair>,
}

/// Shortest time between two queries of one prefix (Consul asks clients to rate-limit).
const MIN_SPACING: Duration = Duration::from_millis(100);

/// The cursor for the next blocking query after an answer carrying `got`.
pub fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev {
        0
    } else {
        got.max(1)
    }
}

/// Reads every prefix once, without blocking, within `timeout`. `None` if Consul did not
/// answer (the worker then starts on its other settings and the watches catch up later).
pub async fn read_once(
    client: &ConsulClient,
    prefixes: &[String],
    timeout: Duration,
) -> Result<Vec<(String, KvListing)>, ConsulError> {
    let all = async {
        let mut out = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            out.push((p.clone(), client.kv_list(p, 0, Duration::ZERO).await?));
        }
        Ok(out)
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(r) => r,
        Err(_) => Err(ConsulError::Status {
            what: "initial KV read".into(),
            status: 0,
            body: format!("no answer within {timeout:?}"),
        }),
    }
}

/// Long-polls `prefix` until `shutdown`, sending a [`Snapshot`] whenever its content changes.
/// `start` is the listing already applied (its index is the first cursor).
pub async fn watch_prefix(
    client: ConsulClient,
    prefix: String,
    start: Option<KvListing>,
    wait: Duration,
    tx: mpsc::Sender<Snapshot>,
    shutdown: CancellationToken,
) {
    let (mut index, mut last) = match start {
        Some(l) => (next_index(0, l.index), Some(l.pairs)),
        None => (0, None),
    };
    let mut retry = backoff();
    let mut failing = false;
    loop {
        let asked = tokio::time::Instant::now();
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = client.kv_list(&prefix, index, wait) => a,
        };
        let pause = match answer {
            Ok(listing) => {
                if failing {
                    tracing::info!(prefix = %prefix, "Consul KV reachable again");
                    failing = false;
                }
                retry = backoff();
                let prev = index;
                index = next_index(prev, listing.index);
                if index == 0 {
                    tracing::info!(prefix = %prefix, was = prev, now = listing.index,
                        "Consul index went backwards: reading the prefix afresh");
                }
                if last.as_ref() != Some(&listing.pairs) {
                    last = Some(listing.pairs.clone());
                    let snap = Snapshot {
                        prefix: prefix.clone(),
                        pairs: listing.pairs,
                    };
                    if tx.send(snap).await.is_err() {
                        return;
                    }
                }
                MIN_SPACING.saturating_sub(asked.elapsed())
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, prefix = %prefix,
                        "Consul KV watch failed; keeping the current settings and retrying");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, prefix = %prefix, "Consul KV still unavailable");
                }
                retry.next().unwrap_or(Duration::from_secs(10))
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_index;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 42), 42);
        assert_eq!(next_index(42, 42), 42, "timeout without change");
        assert_eq!(next_index(42, 50), 50);
        assert_eq!(next_index(42, 7), 0, "went backwards: reset");
        assert_eq!(next_index(0, 0), 1, "never block on 0");
    }
}
