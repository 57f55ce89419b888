//! Redis permissions and credentials: errors that no retry can fix. A `NOPERM`, `NOAUTH` or
//! `WRONGPASS` reply means the worker's Redis user is not allowed what the worker needs, so
//! the worker says what was denied and which ACL rule allows it, at ERROR, and exits
//! non-zero (a settings error, like a refused password) instead of retrying forever.
//!
//! Redis 7.0 does not name the key or channel in its `NOPERM` reply, so start-up
//! ([`preflight`]) touches one key of each namespace and the command channel by name first.

use mindora_sdk::wire::keys;
use mindora_sdk::{RedisConn, RedisConnector};
use redis::RedisError;

/// The ACL rule (after `ACL SETUSER <user> on ><password>`) that allows everything the
/// worker does, and nothing more: rq's keys and mindora's own, the workers' command
/// channels, and the command categories its scripts and calls use (`+role` lets the
/// Sentinel client check the master's role). Documented in `docs/scaling.md`.
/// Under another key prefix (`RQ_KEY_PREFIX`) the key and channel patterns follow it.
pub fn acl_rule() -> String {
    let (rq, mindora) = (keys::rq_prefix(), keys::mindora_prefix());
    format!(
        "resetkeys ~{rq}* ~{mindora}* resetchannels &{rq}pubsub:* \
         -@all +@read +@write +@scripting +@transaction +@connection +@pubsub -@dangerous +role"
    )
}

/// Whether `e` is a refusal of the user's rights or credentials (retrying cannot help).
pub fn is_denied(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOPERM" | "NOAUTH" | "WRONGPASS"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.to_string().contains("NOAUTH")
        || e.to_string().contains("NOPERM")
}

/// The message for a refusal met while doing `what` (naming the key, command or channel).
pub fn explain(e: &RedisError, what: &str) -> String {
    let text = e.to_string();
    if text.contains("NOAUTH") {
        format!(
            "Redis requires authentication ({what}: {text}): give the ACL user and password \
             (user:password@ in the URL, or --redis-username / --redis-password / \
             --redis-password-file)"
        )
    } else if text.contains("WRONGPASS") || e.kind() == redis::ErrorKind::AuthenticationFailed {
        format!("Redis refused the credentials ({what}: {text}): check the user and password")
    } else {
        format!(
            "the Redis user may not {what} ({text}); the worker's user needs the ACL rule \
             `{}` (docs/scaling.md, \"ACL user\")",
            acl_rule()
        )
    }
}

/// Checks at start-up that the user may use rq's keys, mindora's keys, the scripts and
/// the worker's command channel; the error names the first thing denied. Other errors
/// (Redis gone again) are left to the loops that retry.
pub async fn preflight(
    conn: &RedisConn,
    connector: &RedisConnector,
    worker: &str,
) -> Result<(), String> {
    let mut c = conn.clone();
    let key_checks = [keys::worker(worker), keys::worker_lease(worker)];
    for key in &key_checks {
        let r = redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut c)
            .await;
        deny(r, &format!("read or write the key {key}"))?;
    }
    // A script call: NOSCRIPT means allowed.
    let r = redis::cmd("EVALSHA")
        .arg("0000000000000000000000000000000000000000")
        .arg(1)
        .arg(keys::worker(worker))
        .query_async::<redis::Value>(&mut c)
        .await;
    deny(r, "run the worker's Lua scripts (EVALSHA / SCRIPT LOAD)")?;
    let channel = keys::worker_pubsub(worker);
    let subscribed = async {
        let mut pubsub = connector.pubsub().await?;
        pubsub.subscribe(&channel).await
    }
    .await;
    deny(subscribed, &format!("subscribe to the channel {channel}"))
}

fn deny<T>(r: redis::RedisResult<T>, what: &str) -> Result<(), String> {
    match r {
        Err(e) if is_denied(&e) => Err(explain(&e, what)),
        _ => Ok(()),
    }
}
