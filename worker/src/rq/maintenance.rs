//! Fleet upkeep every second: due scheduled jobs onto their queues (under rq's scheduler
//! lock), jobs of dead workers recovered (those whose lease lapsed at once, the rest by
//! rq's TTL rule, one worker per period), queue depth and age
//! gauges, and the worker registration following run-time lane changes.
//!
//! A job that recovery fails for good (no retries left) gets its `failed` rq Webhooks, as
//! rq 3.0's `StartedJobRegistry.cleanup` sends them: after the failure is persisted, on
//! tasks of their own (the loop never waits on an endpoint), counted in
//! `mindora_webhooks_total` like every other webhook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::{Recovered, RqStore};
use super::{RqSource, SOURCE};
use crate::core::Labels;
use crate::metrics as m;

impl RqSource {
    /// `registered`: the lanes the worker registered with.
    pub(super) async fn maintenance_loop(
        self: Arc<Self>,
        stop: CancellationToken,
        mut registered: Arc<Vec<String>>,
    ) {
        let mut last_recover = Instant::now() - self.cfg.recover_every;
        let mut last_stats = Instant::now() - Duration::from_secs(60);
        let mut master = self.store.conn().server();
        loop {
            let now_master = self.store.conn().server();
            if now_master != master && self.reconcile(&master, &now_master).await {
                master = now_master;
            }
            let lanes = self.lanes.get();
            if lanes != registered {
                match self.store.set_queues(&registered, &lanes).await {
                    Ok(()) => {
                        debug!(lanes = ?lanes, "lanes changed; registration updated");
                        registered = lanes.clone();
                    }
                    Err(e) => debug!(error = %e, "could not update the registration's queues"),
                }
            }
            for q in lanes.iter() {
                match self.store.run_scheduler(q, 61).await {
                    Ok(n) if n > 0 => debug!(queue = %q, moved = n, "scheduled jobs enqueued"),
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "scheduler pass failed"),
                }
            }
            if !self.cfg.lease.is_zero() {
                self.recover_lapsed(false).await;
            }
            if last_recover.elapsed() >= self.cfg.recover_every {
                last_recover = Instant::now();
                self.recover(&lanes).await;
            }
            if last_stats.elapsed() >= Duration::from_secs(5) {
                last_stats = Instant::now();
                crate::backlog::refresh(self.store.connection(), &lanes).await;
                if let Ok(stats) = self.store.queue_stats(&lanes).await {
                    for (q, depth, age) in stats {
                        metrics::gauge!(m::QUEUE_DEPTH, "source" => SOURCE.as_str(), "queue" => q.clone())
                            .set(depth as f64);
                        metrics::gauge!(m::QUEUE_OLDEST_AGE, "source" => SOURCE.as_str(), "queue" => q)
                            .set(age);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Crash recovery in seconds: jobs of workers whose liveness lease lapsed, or (with
    /// `restarted`, at start-up) those a dead process of this worker's name left running.
    pub(super) async fn recover_lapsed(&self, restarted: bool) {
        match self.store.recover_lapsed(restarted).await {
            Ok(done) => {
                for r in &done {
                    warn!(job_id = %r.job_id, queue = %r.queue, status = %r.status, "recovered a job of a worker whose lease lapsed");
                    let labels = Labels::new(SOURCE, r.queue.clone(), "<abandoned>");
                    if r.status == "failed" {
                        labels.dead_lettered();
                    } else {
                        labels.retried();
                    }
                }
                send_failed_webhooks(&self.store, done);
            }
            Err(e) => debug!(error = %e, "lease check failed"),
        }
    }

    /// The master changed (Sentinel failover): this worker's executions the new master
    /// lists but the worker does not run (their outcome went to the old master, or they
    /// ended there) go back to their queue, or fail, by rq's rules, instead of waiting for
    /// rq's TTL rule. Claims wait meanwhile.
    async fn reconcile(&self, from: &str, to: &str) -> bool {
        let _claims = self.claim_gate.write().await;
        let kept: Vec<String> = self.owned().iter().cloned().collect();
        match self.store.reconcile(&kept).await {
            Ok(done) => {
                warn!(
                    from,
                    to,
                    running = kept.len(),
                    recovered = done.len(),
                    "reconciled with the new Redis master"
                );
                for r in &done {
                    warn!(job_id = %r.job_id, queue = %r.queue, status = %r.status, "recovered a job whose outcome the old master lost");
                    let labels = Labels::new(SOURCE, r.queue.clone(), "<abandoned>");
                    if r.status == "failed" {
                        labels.dead_lettered();
                    } else {
                        labels.retried();
                    }
                }
                send_failed_webhooks(&self.store, done);
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot reconcile with the new Redis master yet");
                false
            }
        }
    }

    async fn recover(&self, lanes: &[String]) {
        let every = self.cfg.recover_every.as_secs().max(1);
        if let Err(e) =
            crate::ratelimit::cleanup(&self.store.conn(), self.store.worker(), every).await
        {
            debug!(error = %e, "rate-limit cleanup failed");
        }
        for q in lanes {
            match self
                .store
                .recover_abandoned(q, self.cfg.recover_every.as_secs().max(1))
                .await
            {
                Ok(done) => {
                    let labels = Labels::new(SOURCE, q.clone(), "<abandoned>");
                    for r in &done {
                        warn!(job_id = %r.job_id, queue = %q, status = %r.status, "recovered a job abandoned by a dead worker");
                        if r.status == "failed" {
                            labels.dead_lettered();
                        } else {
                            labels.retried();
                        }
                    }
                    send_failed_webhooks(&self.store, done);
                }
                Err(e) => debug!(error = %e, "recovery pass failed"),
            }
        }
    }
}

/// Sends the `failed` webhooks of the jobs recovery failed (only those the scripts report
/// as carrying webhooks: a job re-queued for a retry sends none), in the background.
fn send_failed_webhooks(store: &RqStore, done: Vec<Recovered>) {
    let failed: Vec<Recovered> = done
        .into_iter()
        .filter(|r| r.status == "failed" && r.webhooks)
        .collect();
    if failed.is_empty() {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        for r in failed {
            match store.job_hash(&r.job_id).await {
                Ok(Some(hash)) => {
                    let ended = hash.ended_at().unwrap_or_else(chrono::Utc::now);
                    crate::webhooks::dispatch(
                        &hash,
                        crate::webhooks::Terminal::Failed,
                        ended,
                        Some(&r.exc_string),
                    );
                }
                Ok(None) => debug!(job_id = %r.job_id, "recovered job is gone; no webhooks"),
                Err(e) => {
                    warn!(job_id = %r.job_id, error = %e, "cannot read a recovered job; its webhooks are not sent");
                    metrics::counter!(crate::webhooks::WEBHOOKS_TOTAL, "outcome" => "failed")
                        .increment(1);
                }
            }
        }
    });
}
