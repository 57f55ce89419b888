//! rq 3.0 rate limits (`rq/rate_limit.py`): `rq:rl-keys` lists every key in use;
//! `rq:rl:<key>` holds its `concurrency`, `rq:rl:<key>:allowed` the jobs holding a slot
//! (queued or running; at most `concurrency` of them), `rq:rl:<key>:rate_limited` the jobs
//! waiting for one. rq 2.12 has none of these: the page is then empty.

use std::collections::BTreeSet;

use mindora_sdk::wire::keys;
use mindora_sdk::RedisConn;

use super::{DataError, RateLimitView};

/// Every rate-limit key with its slots in use and its waiting count.
pub async fn rate_limits(conn: &RedisConn) -> Result<Vec<RateLimitView>, DataError> {
    let mut c = conn.clone();
    let names: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg(keys::rate_limit_keys())
        .query_async(&mut c)
        .await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in &names {
        pipe.hget(keys::rate_limit(k), "concurrency")
            .zrange(keys::rate_limit_allowed(k), 0, -1)
            .zcard(keys::rate_limit_waiting(k));
    }
    let flat: Vec<redis::Value> = pipe.query_async(&mut c).await?;
    let mut out = Vec::with_capacity(names.len());
    let mut it = flat.into_iter();
    for key in names {
        let (Some(conc), Some(allowed), Some(waiting)) = (it.next(), it.next(), it.next()) else {
            break;
        };
        let concurrency: Option<String> = redis::from_redis_value(conc).unwrap_or_default();
        out.push(RateLimitView {
            concurrency: concurrency.and_then(|s| s.trim().parse().ok()),
            in_use: redis::from_redis_value(allowed).unwrap_or_default(),
            waiting: redis::from_redis_value(waiting).unwrap_or_default(),
            key,
        });
    }
    Ok(out)
}
