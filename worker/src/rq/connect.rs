//! Every Redis connection the worker opens is made here, from one
//! [`RedisConnector`](mindora_sdk::RedisConnector) (built by `sdk/src/connect` from the URL
//! and the TLS / ACL / Sentinel flags): the multiplexed command connection, the separate
//! connection for blocking pops, and the pub/sub connection for rq's commands. Under
//! Sentinel each of them follows the master through failovers.

use std::time::Duration;

use backon::Retryable;
use mindora_sdk::connect::ManagerOptions;
use mindora_sdk::{RedisConn, RedisConnector};

/// Opens a reconnecting connection; `response_timeout` must exceed any blocking call.
pub async fn connect(
    redis: &RedisConnector,
    response_timeout: Duration,
) -> redis::RedisResult<RedisConn> {
    let options = ManagerOptions {
        response_timeout: Some(response_timeout),
        ..ManagerOptions::default()
    };
    redis.manager(&options).await
}

/// Like [`connect`], but waits (with backoff, loudly) while Redis is unreachable: Redis
/// may start after the worker (compose, restarts). Errors retrying cannot fix (a TLS
/// certificate that does not verify, refused credentials, a bad URL) return at once.
pub async fn connect_with_retry(
    redis: &RedisConnector,
    response_timeout: Duration,
) -> redis::RedisResult<RedisConn> {
    (|| connect(redis, response_timeout))
        .retry(crate::backoff::reconnect())
        .when(mindora_sdk::connect::is_transient)
        .notify(|e, _| tracing::warn!(error = %e, url = %redis.describe(), "Redis not reachable yet; retrying"))
        .await
}
