//! A queue's *true* backlog: what autoscalers should scale on.
//!
//! The length of `rq:queue:<q>` (what KEDA's Redis list scaler reads) misses jobs that are
//! already running, jobs waiting out a retry delay and jobs scheduled for the next moments.
//! [`read_backlog`] counts all of them per queue in one script call (one round trip, one
//! consistent view); `mindora-worker` exports the sum as `mindora_queue_backlog{queue}`.

use chrono::Utc;
use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::wire::scripts;

/// Scheduled jobs due within this many seconds count as backlog by default (a job due
/// tomorrow should not keep workers up today).
pub const DEFAULT_HORIZON_SECS: i64 = 60;

/// Jobs of one queue that still need a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueBacklog {
    /// Queue name.
    pub queue: String,
    /// Waiting in the queue (and rq's intermediate list).
    pub queued: i64,
    /// Scheduled (`enqueue_in`/`enqueue_at`, retry delays) and due within the horizon.
    pub scheduled_due: i64,
    /// Running now, or abandoned by a dead worker and not yet recovered.
    pub started: i64,
    /// Waiting for their dependencies.
    pub deferred: i64,
}

impl QueueBacklog {
    /// What needs worker capacity now or soon: queued + scheduled due + started. Deferred
    /// jobs are left out: they wait on parents that are themselves counted, and become
    /// queued (and counted) when those finish.
    pub fn total(&self) -> i64 {
        self.queued + self.scheduled_due + self.started
    }
}

/// Reads the backlog of `queues` in one round trip.
pub async fn read_backlog<C: ConnectionLike>(
    conn: &mut C,
    queues: &[String],
    horizon_secs: i64,
) -> RedisResult<Vec<QueueBacklog>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut inv = scripts::BACKLOG.prepare_invoke();
    inv.arg(Utc::now().timestamp()).arg(horizon_secs);
    for q in queues {
        inv.arg(q);
    }
    let flat: Vec<i64> = inv.invoke_async(conn).await?;
    Ok(queues
        .iter()
        .zip(flat.chunks(4))
        .map(|(q, c)| QueueBacklog {
            queue: q.clone(),
            queued: c.first().copied().unwrap_or(0),
            scheduled_due: c.get(1).copied().unwrap_or(0),
            started: c.get(2).copied().unwrap_or(0),
            deferred: c.get(3).copied().unwrap_or(0),
        })
        .collect())
}
