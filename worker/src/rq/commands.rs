//! rq's worker commands, published on `rq:pubsub:<worker>` by
//! `rq.command.send_shutdown_command`, `send_stop_job_command`, `send_kill_horse_command`.

use std::sync::Arc;

use futures::StreamExt;
use mindora_sdk::wire::keys;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RqSource;
use crate::backoff::{self, Pacer};

impl RqSource {
    /// Listens for commands, resubscribing (with backoff) when the connection drops.
    pub(super) async fn command_loop(self: Arc<Self>, stop: CancellationToken) {
        let channel = keys::worker_pubsub(self.store.worker());
        let mut pacer = Pacer::new(backoff::reconnect());
        loop {
            let session = async {
                let mut pubsub = self.redis.pubsub().await?;
                pubsub.subscribe(&channel).await?;
                pacer.reset();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    self.handle_command(&payload);
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = session => if let Err(e) = r {
                    if self.denied(&e, &format!("subscribe to the channel {channel}")) {
                        return;
                    }
                    debug!(error = %e, "command channel lost; resubscribing")
                },
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(pacer.next_delay()) => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    fn handle_command(&self, payload: &str) {
        let Ok(cmd) = serde_json::from_str::<Value>(payload) else {
            warn!(payload, "ignoring malformed command");
            return;
        };
        match cmd.get("command").and_then(Value::as_str) {
            Some("shutdown") => {
                info!("shutdown command received");
                self.shutdown.cancel();
            }
            Some("stop-job") => {
                let Some(job_id) = cmd.get("job_id").and_then(Value::as_str) else {
                    return;
                };
                for r in self.running().values().filter(|r| r.job_id == job_id) {
                    info!(job_id, "stop-job command received");
                    r.stop.cancel();
                }
            }
            Some("kill-horse") => {
                for r in self.running().values() {
                    r.stop.cancel();
                }
            }
            other => warn!(command = ?other, "ignoring unknown command"),
        }
    }
}
