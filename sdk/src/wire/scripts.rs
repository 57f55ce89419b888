//! rq state transitions as Lua scripts. Each runs atomically inside Redis: a job is claimed,
//! finished, failed, retried, scheduled or recovered exactly once, whatever crashes or
//! races around it. The writes are those rq itself makes for the same transition (see
//! the comments in each script); `common.lua` holds the pieces they share.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use super::keys;

/// One of mindora's scripts. Every call passes the key prefixes first (see `common.lua`)
/// and declares one key, the prefix's queue set: the scripts name their keys themselves
/// (as rq's do), and on a Redis Cluster that declared key routes the call to the node
/// that holds the prefix's hash slot.
pub struct RqScript(Script);

impl RqScript {
    fn new(source: &str) -> Self {
        RqScript(Script::new(source))
    }

    /// An invocation with the prefixes and the routing key already in place; add the
    /// script's own arguments after.
    pub fn prepare_invoke(&self) -> ScriptInvocation<'_> {
        let mut inv = self.0.prepare_invoke();
        inv.key(keys::queues())
            .arg(keys::rq_prefix())
            .arg(keys::mindora_prefix());
        inv
    }

    /// The script's SHA1 (as `SCRIPT LOAD` returns it).
    pub fn get_hash(&self) -> &str {
        self.0.get_hash()
    }
}

/// Every script's source, by file name, so tests can pin the keys they touch to
/// [`super::keys`].
pub const SOURCES: &[(&str, &str)] = &[
    ("common.lua", include_str!("lua/common.lua")),
    ("claim.lua", include_str!("lua/claim.lua")),
    ("finish.lua", include_str!("lua/finish.lua")),
    ("fail.lua", include_str!("lua/fail.lua")),
    ("requeue.lua", include_str!("lua/requeue.lua")),
    ("schedule.lua", include_str!("lua/schedule.lua")),
    ("recover.lua", include_str!("lua/recover.lua")),
    ("recover_lapsed.lua", include_str!("lua/recover_lapsed.lua")),
    ("heartbeat.lua", include_str!("lua/heartbeat.lua")),
    ("enqueue.lua", include_str!("lua/enqueue.lua")),
    ("cancel.lua", include_str!("lua/cancel.lua")),
    (
        "ratelimit_cleanup.lua",
        include_str!("lua/ratelimit_cleanup.lua"),
    ),
    ("cron_enqueue.lua", include_str!("lua/cron_enqueue.lua")),
    ("requeue_ended.lua", include_str!("lua/requeue_ended.lua")),
    ("delete.lua", include_str!("lua/delete.lua")),
];

const COMMON: &str = include_str!("lua/common.lua");

fn with_common(body: &str) -> RqScript {
    RqScript::new(&format!("{COMMON}\n{body}"))
}

/// Pop and start up to N jobs across lanes in priority order.
pub static CLAIM: LazyLock<RqScript> = LazyLock::new(|| with_common(include_str!("lua/claim.lua")));
/// Record successful executions (several per call, each fenced on its own) and enqueue
/// ready dependents.
pub static FINISH: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/finish.lua")));
/// Record a failed execution: retry, fail (dead-letter) or stop.
pub static FAIL: LazyLock<RqScript> = LazyLock::new(|| with_common(include_str!("lua/fail.lua")));
/// Give a started job back to the head of its queue (shutdown grace ran out).
pub static REQUEUE: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/requeue.lua")));
/// Move due scheduled jobs onto their queue.
pub static SCHEDULE: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/schedule.lua")));
/// Recover executions of dead workers (rq's started-registry cleanup).
pub static RECOVER: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/recover.lua")));
/// Recover executions of workers whose liveness lease lapsed (crash recovery in seconds).
pub static RECOVER_LAPSED: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/recover_lapsed.lua")));
/// Heartbeat a worker and its executions.
pub static HEARTBEAT: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/heartbeat.lua")));
/// Enqueue a new job (queued, scheduled or deferred).
pub static ENQUEUE: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/enqueue.lua")));
/// Cancel a job that has not started.
pub static CANCEL: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/cancel.lua")));
/// Count each queue's true backlog (queued, scheduled soon, started, deferred); read-only.
pub static BACKLOG: LazyLock<RqScript> =
    LazyLock::new(|| RqScript::new(include_str!("lua/backlog.lua")));
/// rq 3.0 rate limits: free leaked slots and promote waiting jobs (maintenance).
pub static RATELIMIT_CLEANUP: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/ratelimit_cleanup.lua")));
/// Enqueue one cron tick, exactly once across every scheduler (claim and enqueue in one step).
pub static CRON_ENQUEUE: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/cron_enqueue.lua")));
/// Put a failed, stopped or canceled job back on its queue (rq's `Job.requeue` /
/// `FailedJobRegistry.requeue`), for the console.
pub static REQUEUE_ENDED: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/requeue_ended.lua")));
/// Delete a job everywhere (rq's `Job.delete`), for the console.
pub static DELETE: LazyLock<RqScript> =
    LazyLock::new(|| with_common(include_str!("lua/delete.lua")));
