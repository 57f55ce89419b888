//! Fetch: how rq jobs are claimed (Sidekiq's `fetch.rb` role). Slots come from the process
//! budget first, then one script call claims up to that many jobs in strict lane order and
//! starts them atomically. When the lanes are empty, a blocking `BLMOVE` into rq's
//! intermediate list waits for the next job, so no pop is ever lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, Retryable};
use tracing::{debug, error, info, warn};

use mindora_sdk::wire::keys;

use super::store::Claimed;
use super::{RqSource, MONITOR_INTERVAL_SECS, SOURCE};
use crate::backoff::{self, Pacer};
use crate::core::Slot;
use crate::metrics as m;

/// The lanes in priority order without the paused ones (`keys::paused_queues`, set from
/// the console): a paused queue's jobs stay queued until it is resumed.
fn unpaused(lanes: &[String], paused: &HashSet<String>) -> Vec<String> {
    lanes
        .iter()
        .filter(|l| !paused.contains(*l))
        .cloned()
        .collect()
}

impl RqSource {
    /// Claims and starts jobs until shutdown (or, in burst mode, until idle).
    pub(super) async fn fetch_loop(self: &Arc<Self>) {
        let mut pacer = Pacer::new(backoff::reconnect());
        let mut failing = false;
        let mut suspended_checked = Instant::now() - Duration::from_secs(10);
        let mut paused = HashSet::new();
        let budget = self.core.budget().clone();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if suspended_checked.elapsed() > Duration::from_secs(1) {
                suspended_checked = Instant::now();
                if self.suspended().await {
                    continue;
                }
                // Queues paused from the console, read as often as `suspended`; on an
                // error the last known set stays.
                if let Ok(now_paused) = self.store.paused_queues().await {
                    paused = now_paused;
                }
            }
            let lanes = unpaused(&self.lanes.get(), &paused);
            if lanes.is_empty() {
                // Every lane is paused: look again in a second.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(1000)) => {},
                    _ = self.shutdown.cancelled() => break,
                }
                continue;
            }
            let first = tokio::select! {
                s = budget.acquire() => match s { Some(s) => s, None => break },
                _ = self.shutdown.cancelled() => break,
            };
            let mut slots = vec![first];
            slots.extend(std::iter::from_fn(|| budget.try_acquire()));
            let gate = self.claim_gate.read().await;
            let claimed = self
                .store
                .claim(
                    &lanes,
                    slots.len(),
                    MONITOR_INTERVAL_SECS,
                    self.cfg.abandon_grace_secs,
                    None,
                )
                .await;
            match claimed {
                Ok(jobs) => {
                    if failing {
                        failing = false;
                        metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                        info!("Redis is back");
                    }
                    pacer.reset();
                    self.core.health().redis_ok();
                    if !jobs.is_empty() {
                        self.start(jobs, slots);
                        continue;
                    }
                    drop(gate);
                    drop(slots);
                    if self.cfg.burst {
                        if self.idle_in_burst(&lanes).await {
                            info!("burst mode: queues empty, nothing running; exiting");
                            break;
                        }
                        continue;
                    }
                    self.wait_for_job(&lanes).await;
                }
                Err(e) => {
                    drop(gate);
                    drop(slots);
                    if self.denied(
                        &e,
                        "claim jobs (the CLAIM script on rq:queue:*, rq:wip:*, rq:job:*)",
                    ) {
                        break;
                    }
                    if !failing {
                        error!(error = %e, "cannot claim jobs; Redis unreachable? retrying with backoff");
                    }
                    failing = true;
                    tokio::select! {
                        _ = tokio::time::sleep(pacer.next_delay()) => {},
                        _ = self.shutdown.cancelled() => {},
                    }
                }
            }
        }
    }

    /// Whether `rq suspend` is in force; while it is, the worker shows `suspended` and
    /// claims nothing (it pauses a second here).
    async fn suspended(&self) -> bool {
        if !matches!(self.store.suspended().await, Ok(true)) {
            return false;
        }
        let current = self.current_job();
        let _ = self.store.set_state("suspended", current.as_deref()).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            _ = self.shutdown.cancelled() => {},
        }
        if !matches!(self.store.suspended().await, Ok(true)) {
            let current = self.current_job();
            let state = if current.is_some() { "busy" } else { "idle" };
            let _ = self.store.set_state(state, current.as_deref()).await;
        }
        true
    }

    /// Burst mode: true when nothing of this source runs and a fresh sweep finds nothing.
    async fn idle_in_burst(self: &Arc<Self>, lanes: &[String]) -> bool {
        // Wait for running jobs: they may enqueue dependents or retries.
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
        let Some(slot) = self.core.budget().acquire().await else {
            return true;
        };
        let _gate = self.claim_gate.read().await;
        match self
            .store
            .claim(
                lanes,
                1,
                MONITOR_INTERVAL_SECS,
                self.cfg.abandon_grace_secs,
                None,
            )
            .await
        {
            Ok(jobs) if jobs.is_empty() => true,
            Ok(jobs) => {
                self.start(jobs, vec![slot]);
                false
            }
            Err(_) => false,
        }
    }

    /// Blocks until the next job arrives, then claims it. One lane: block up to a second
    /// on it. Several: block up to 100 ms on the highest lane; the fetch loop's atomic
    /// sweep then takes the lower lanes, so they wait at most ~100 ms while the worker is
    /// idle. (rq's own worker uses `BLPOP` across several queues, which can lose a job
    /// popped by a dying worker.)
    async fn wait_for_job(self: &Arc<Self>, lanes: &[String]) {
        let Some(lane) = lanes.first() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        };
        let timeout = if lanes.len() == 1 { 1.0 } else { 0.1 };
        match self.store.wait_pop(lane, timeout).await {
            Ok(Some(id)) => {
                let Some(slot) = self.core.budget().acquire().await else {
                    return;
                };
                let claim = || {
                    self.store.claim(
                        std::slice::from_ref(lane),
                        1,
                        MONITOR_INTERVAL_SECS,
                        self.cfg.abandon_grace_secs,
                        Some(&id),
                    )
                };
                let _gate = self.claim_gate.read().await;
                let claimed = claim
                    .retry(
                        ConstantBuilder::default()
                            .with_delay(Duration::from_millis(200))
                            .with_max_times(50),
                    )
                    .notify(|e, _| warn!(error = %e, job_id = %id, "claim after blocking pop failed; retrying"))
                    .await;
                match claimed {
                    Ok(jobs) => self.start(jobs, vec![slot]),
                    Err(e) => {
                        error!(error = %e, job_id = %id, "giving up claiming a popped job; recovery will requeue it from the intermediate list")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                if self.denied(&e, &format!("wait for jobs (BLMOVE on rq:queue:{lane})")) {
                    return;
                }
                debug!(error = %e, "blocking pop failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Starts each claimed job as a unit of work holding one of `slots` (the script never
    /// returns more jobs than slots were asked for; spare slots go back to the budget).
    fn start(self: &Arc<Self>, jobs: Vec<Claimed>, slots: Vec<Slot>) {
        for (job, slot) in jobs.into_iter().zip(slots) {
            self.active.send_modify(|n| *n += 1);
            let composite = keys::execution_composite(&job.job_id, &job.exec_id);
            self.owned().insert(composite.clone());
            let this = self.clone();
            let (job_id, queue) = (job.job_id.clone(), job.queue.clone());
            self.core.spawn(slot, SOURCE, &job_id, &queue, async move {
                let active = this.active.clone();
                this.core
                    .work(super::unit::RqUnit::new(this.clone(), job))
                    .await;
                this.owned().remove(&composite);
                active.send_modify(|n| *n = n.saturating_sub(1));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_lanes_are_left_out_in_order() {
        let lanes: Vec<String> = ["high", "slow", "low"].map(String::from).into();
        let paused: HashSet<String> = ["slow".to_string()].into();
        assert_eq!(unpaused(&lanes, &paused), vec!["high", "low"]);
        assert_eq!(unpaused(&lanes, &HashSet::new()), lanes);
    }
}
