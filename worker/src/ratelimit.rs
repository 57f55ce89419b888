//! rq 3.0 `RateLimit(key, concurrency)` maintenance. Slots are taken and given back inside
//! the transition scripts (`mindora_sdk::wire::scripts`): promotion at enqueue, release on
//! success, final failure and delayed retry. This pass is rq's `RateLimitRegistry.cleanup`:
//! it frees slots leaked by jobs that expired or whose worker died, and promotes waiting
//! jobs, so no job stays `rate_limited` forever.

use chrono::Utc;
use mindora_sdk::wire::time::{epoch_float, utcformat};
use mindora_sdk::wire::{keys, scripts};
use mindora_sdk::RedisConn;

/// Runs one cleanup over every rate-limit key, if no other worker did in the last
/// `every_secs`. Returns how many waiting jobs were promoted.
pub async fn cleanup(conn: &RedisConn, worker: &str, every_secs: u64) -> redis::RedisResult<i64> {
    let mut conn = conn.clone();
    let taken: Option<String> = redis::cmd("SET")
        .arg(keys::rate_limit_cleanup_lock())
        .arg(worker)
        .arg("NX")
        .arg("EX")
        .arg(every_secs.max(1))
        .query_async(&mut conn)
        .await?;
    if taken.is_none() {
        return Ok(0);
    }
    let now = Utc::now();
    scripts::RATELIMIT_CLEANUP
        .prepare_invoke()
        .arg(utcformat(now))
        .arg(epoch_float(now))
        .invoke_async(&mut conn)
        .await
}
