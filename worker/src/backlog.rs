//! `mindora_queue_backlog{queue}`: the figure autoscalers (KEDA's Prometheus scaler, an
//! HPA on external metrics) should scale on. It counts queued + started + scheduled-soon
//! jobs (see [`mindora_sdk::backlog`]), read in one round trip alongside the queue-depth
//! gauges; the parts are exported too, as `mindora_queue_backlog_jobs{queue,state}`.

use mindora_sdk::backlog::{read_backlog, DEFAULT_HORIZON_SECS};
use mindora_sdk::RedisConn;

/// Gauge: queued + started + scheduled-due jobs per queue.
pub const QUEUE_BACKLOG: &str = "mindora_queue_backlog";
/// Gauge: the backlog's parts per queue and state (queued, scheduled_due, started,
/// deferred; deferred is not in the sum).
pub const QUEUE_BACKLOG_JOBS: &str = "mindora_queue_backlog_jobs";

/// Reads the backlog of `queues` and sets the gauges; a failed read leaves them as they
/// were (the next refresh tries again).
pub async fn refresh(mut conn: RedisConn, queues: &[String]) {
    let backlog = match read_backlog(&mut conn, queues, DEFAULT_HORIZON_SECS).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "backlog refresh failed");
            return;
        }
    };
    for b in backlog {
        metrics::gauge!(QUEUE_BACKLOG, "queue" => b.queue.clone()).set(b.total() as f64);
        for (state, n) in [
            ("queued", b.queued),
            ("scheduled_due", b.scheduled_due),
            ("started", b.started),
            ("deferred", b.deferred),
        ] {
            metrics::gauge!(QUEUE_BACKLOG_JOBS, "queue" => b.queue.clone(), "state" => state)
                .set(n as f64);
        }
    }
}
