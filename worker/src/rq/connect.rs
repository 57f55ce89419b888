//! Every Redis connection the worker opens is made here, from the URL (TLS `rediss://`
//! and Sentinel plug in at [`client`]): the multiplexed command connection, the separate
//! connection for blocking pops, and the pub/sub connection for rq's commands.

use std::time::Duration;

use backon::Retryable;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The client every connection comes from; the one place a Redis URL is interpreted.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    redis::Client::open(url)
}

/// Connection settings shared by the worker's Redis connections.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// Opens a reconnecting connection; `response_timeout` must exceed any blocking call.
pub async fn connect(
    url: &str,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client(url)?, manager_config(response_timeout)).await
}

/// Like [`connect`], but waits (with backoff, loudly) while Redis is unreachable: Redis
/// may start after the worker (compose, restarts). Other errors (bad URL) return at once.
pub async fn connect_with_retry(
    url: &str,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    (|| connect(url, response_timeout))
        .retry(crate::backoff::reconnect())
        .when(|e| e.is_connection_refusal() || e.is_timeout() || e.is_io_error())
        .notify(|e, _| tracing::warn!(error = %e, url = %redact(url), "Redis not reachable yet; retrying"))
        .await
}

/// A URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}
