//! The worker's own rq registration: birth, heartbeat, state, death (what `rq info`,
//! `Worker.all()` and dashboards read).

use chrono::Utc;
use mindora_sdk::wire::time::{epoch_float, epoch_secs, utcformat};
use mindora_sdk::wire::{self, keys, scripts};

use super::{Beat, RqStore, StoreResult};

impl RqStore {
    /// Heartbeats the worker and every running execution; false when the worker is no
    /// longer registered (the caller registers it again).
    pub async fn heartbeat(&self, running: &[Beat], worker_ttl: i64) -> StoreResult<bool> {
        let now = Utc::now();
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.arg(&self.worker)
            .arg(utcformat(now))
            .arg(epoch_float(now))
            .arg(epoch_secs(now))
            .arg(worker_ttl)
            .arg(self.lease_ms);
        for b in running {
            inv.arg(&b.job_id)
                .arg(&b.queue)
                .arg(&b.exec_id)
                .arg(b.ttl_secs);
        }
        let mut conn = self.conn();
        inv.invoke_async::<i64>(&mut conn)
            .await
            .map(|alive| alive == 1)
    }

    /// Registers this worker as rq does (`Worker.register_birth`), so `rq info` and
    /// `Worker.all()` list it.
    pub async fn register_birth(&self, queues: &[String], version: &str) -> StoreResult<()> {
        let now = utcformat(Utc::now());
        let key = keys::worker(&self.worker);
        let host = hostname();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("birth", now.as_str()),
                    ("last_heartbeat", now.as_str()),
                    ("queues", queues.join(",").as_str()),
                    ("pid", std::process::id().to_string().as_str()),
                    ("hostname", host.as_str()),
                    ("ip_address", ""),
                    ("version", version),
                    ("python_version", "n/a (mindora-worker, Rust)"),
                    ("state", "started"),
                    ("successful_job_count", "0"),
                    ("failed_job_count", "0"),
                    ("total_working_time", "0"),
                ],
            )
            .sadd(keys::workers(), &key);
        if self.lease_ms > 0 {
            pipe.hset(&key, keys::WORKER_LEASE_FIELD, self.lease_ms)
                .cmd("SET")
                .arg(keys::worker_lease(&self.worker))
                .arg(&now)
                .arg("PX")
                .arg(self.lease_ms)
                .ignore();
        }
        for q in queues {
            pipe.sadd(keys::workers_by_queue(q), &key);
            pipe.sadd(keys::queues(), keys::queue(q));
        }
        pipe.expire(&key, wire::WORKER_TTL_SECS + 60);
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Sets the worker's `state` and `current_job` (`None` clears it). The claim and
    /// outcome scripts keep both true while jobs start and end; this is for the states
    /// only the loop knows (`suspended`, re-registration after a Redis restart).
    pub async fn set_state(&self, state: &str, current_job: Option<&str>) -> StoreResult<()> {
        let key = keys::worker(&self.worker);
        let mut pipe = redis::pipe();
        pipe.hset(&key, "state", state);
        match current_job {
            Some(j) => pipe.hset(&key, "current_job", j),
            None => pipe.hdel(&key, "current_job"),
        };
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Replaces the queues the worker is registered for (`queues` field and the per-queue
    /// worker sets), when its lanes change at run time.
    pub async fn set_queues(&self, old: &[String], new: &[String]) -> StoreResult<()> {
        let key = keys::worker(&self.worker);
        let mut pipe = redis::pipe();
        pipe.atomic().hset(&key, "queues", new.join(","));
        for q in old.iter().filter(|q| !new.contains(q)) {
            pipe.srem(keys::workers_by_queue(q), &key);
        }
        for q in new {
            pipe.sadd(keys::workers_by_queue(q), &key);
            pipe.sadd(keys::queues(), keys::queue(q));
        }
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Unregisters the worker (`Worker.register_death`).
    pub async fn register_death(&self, queues: &[String]) -> StoreResult<()> {
        let key = keys::worker(&self.worker);
        let mut pipe = redis::pipe();
        pipe.atomic().srem(keys::workers(), &key);
        for q in queues {
            pipe.srem(keys::workers_by_queue(q), &key);
        }
        pipe.hset(&key, "death", utcformat(Utc::now()))
            .hset(&key, "state", "dead")
            .expire(&key, 60)
            .del(keys::worker_executions(&self.worker))
            .del(keys::worker_lease(&self.worker));
        let mut conn = self.conn();
        pipe.query_async::<()>(&mut conn).await
    }
}

/// The machine's host name, for the worker hash and default worker names.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}
