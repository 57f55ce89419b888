//! The heartbeat: one script call keeps the worker hash and every running execution alive
//! (rq's `maintain_heartbeats`, batched), and registers the worker again if Redis lost it.

use std::sync::Arc;

use mindora_sdk::wire;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::store::Beat;
use super::{RqSource, MONITOR_INTERVAL_SECS};

impl RqSource {
    pub(super) async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let beats = self.beats();
            match self
                .store
                .heartbeat(&beats, wire::WORKER_TTL_SECS + 60)
                .await
            {
                Ok(true) => self.core.health().redis_ok(),
                Ok(false) => self.register_again(&beats).await,
                Err(e)
                    if self.denied(
                        &e,
                        "heartbeat (the HEARTBEAT script on rq:worker:<name> and its executions)",
                    ) =>
                {
                    return
                }
                Err(e) => warn!(error = %e, "heartbeat failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.beat_period()) => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    /// The heartbeat period, short enough to renew the lease three times per lease.
    fn beat_period(&self) -> std::time::Duration {
        if self.cfg.lease.is_zero() {
            self.cfg.heartbeat
        } else {
            self.cfg.heartbeat.min(self.cfg.lease / 3)
        }
    }

    /// What to heartbeat: each running execution with rq's ttl (the time left of its
    /// timeout, at most the monitoring interval, plus the abandon grace).
    fn beats(&self) -> Vec<Beat> {
        self.running()
            .values()
            .map(|r| {
                let remaining = if r.timeout_secs > 0 {
                    (r.timeout_secs - r.started.elapsed().as_secs() as i64).max(0)
                } else {
                    MONITOR_INTERVAL_SECS
                };
                Beat {
                    job_id: r.job_id.clone(),
                    queue: r.queue.clone(),
                    exec_id: r.exec_id.clone(),
                    ttl_secs: remaining.min(MONITOR_INTERVAL_SECS) + self.cfg.abandon_grace_secs,
                }
            })
            .collect()
    }

    /// The worker hash is gone (Redis restarted empty, or it expired): register again
    /// and restore its state.
    async fn register_again(&self, beats: &[Beat]) {
        warn!("worker registration lost (Redis restarted?); registering again");
        let lanes = self.lanes.get();
        if let Err(e) = self.store.register_birth(&lanes, &self.version).await {
            warn!(error = %e, "registering again failed");
            return;
        }
        let _ = self
            .store
            .heartbeat(beats, wire::WORKER_TTL_SECS + 60)
            .await;
        let current = self.current_job();
        let state = if current.is_some() { "busy" } else { "idle" };
        let _ = self.store.set_state(state, current.as_deref()).await;
    }
}
