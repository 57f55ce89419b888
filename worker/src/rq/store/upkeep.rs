//! Fleet upkeep any worker may do: moving due scheduled jobs (under rq's scheduler lock),
//! recovering executions of dead workers, and reading queue statistics.

use chrono::Utc;
use mindora_sdk::wire::result::encode_exc_string;
use mindora_sdk::wire::time::{epoch_secs, utcformat};
use mindora_sdk::wire::{self, keys, scripts};

use super::{RqStore, StoreResult};

/// One execution of a dead worker that recovery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The job.
    pub job_id: String,
    /// Its queue.
    pub queue: String,
    /// Its new status: `queued` / `scheduled` (retried) or `failed`.
    pub status: String,
    /// Failed, and carries rq Webhooks to send (rq 3.0's cleanup sends `failed` ones).
    pub webhooks: bool,
    /// The failure text recorded for it (rq's AbandonedJobError line).
    pub exc_string: String,
}

impl RqStore {
    /// Moves due scheduled jobs of `queue` onto it, if this worker holds (or takes) rq's
    /// scheduler lock for the queue. Returns how many moved.
    pub async fn run_scheduler(&self, queue: &str, lock_ttl_secs: u64) -> StoreResult<i64> {
        let mut conn = self.conn();
        let lock = keys::scheduler_lock(queue);
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&self.worker)
            .arg("NX")
            .arg("EX")
            .arg(lock_ttl_secs)
            .query_async(&mut conn)
            .await?;
        if taken.is_none() {
            let holder: Option<String> =
                redis::cmd("GET").arg(&lock).query_async(&mut conn).await?;
            if holder.as_deref() != Some(self.worker.as_str()) {
                return Ok(0);
            }
            redis::cmd("EXPIRE")
                .arg(&lock)
                .arg(lock_ttl_secs)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        let now = Utc::now();
        scripts::SCHEDULE
            .prepare_invoke()
            .arg(queue)
            .arg(epoch_secs(now))
            .arg(utcformat(now))
            .arg(1000)
            .invoke_async(&mut conn)
            .await
    }

    /// Releases the scheduler locks this worker holds.
    pub async fn release_scheduler_locks(&self, queues: &[String]) -> StoreResult<()> {
        let mut conn = self.conn();
        for q in queues {
            let lock = keys::scheduler_lock(q);
            let holder: Option<String> =
                redis::cmd("GET").arg(&lock).query_async(&mut conn).await?;
            if holder.as_deref() == Some(self.worker.as_str()) {
                redis::cmd("DEL")
                    .arg(&lock)
                    .query_async::<i64>(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Recovers executions abandoned by dead workers on `queue` (at most one worker of the
    /// fleet does this per `every_secs`).
    pub async fn recover_abandoned(
        &self,
        queue: &str,
        every_secs: u64,
    ) -> StoreResult<Vec<Recovered>> {
        let mut conn = self.conn();
        let taken: Option<String> = redis::cmd("SET")
            .arg(keys::recover_lock(queue))
            .arg(&self.worker)
            .arg("NX")
            .arg("EX")
            .arg(every_secs.max(1))
            .query_async(&mut conn)
            .await?;
        if taken.is_none() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let message = format!(
            "Moved to FailedJobRegistry, due to AbandonedJobError, at {}",
            now.format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        );
        let exc = encode_exc_string(&message).unwrap_or_default();
        let out: Vec<Vec<String>> = scripts::RECOVER
            .prepare_invoke()
            .arg(queue)
            .arg(epoch_secs(now))
            .arg(utcformat(now))
            .arg(exc)
            .arg(&message)
            .invoke_async(&mut conn)
            .await?;
        self.recover_intermediate(queue).await?;
        // Rows are read as lists: redis-rs takes a one-row reply for a flat tuple.
        Ok(out
            .into_iter()
            .filter_map(|row| match <[String; 3]>::try_from(row) {
                Ok([job_id, status, hooks]) => Some(Recovered {
                    job_id,
                    queue: queue.to_string(),
                    status,
                    webhooks: hooks == "1",
                    exc_string: message.clone(),
                }),
                Err(_) => None,
            })
            .collect())
    }

    /// Recovers, at once, the running executions of every mindora worker whose liveness
    /// lease lapsed (at most one worker of the fleet looks per second). With `restarted`,
    /// recovers instead what a dead process of this worker's own name left running (called
    /// once at start-up, before registering).
    pub async fn recover_lapsed(&self, restarted: bool) -> StoreResult<Vec<Recovered>> {
        let mut conn = self.conn();
        if !restarted {
            let taken: Option<String> = redis::cmd("SET")
                .arg(keys::lease_check_lock())
                .arg(&self.worker)
                .arg("NX")
                .arg("PX")
                .arg(900)
                .query_async(&mut conn)
                .await?;
            if taken.is_none() {
                return Ok(Vec::new());
            }
        }
        let own = if restarted { self.worker.as_str() } else { "" };
        self.recover_executions(own, "worker lease lapsed", &[])
            .await
    }

    /// After the Redis master changed: this worker's executions on the new master that it
    /// does not run (`running`: their composites) are recovered now (retried or failed as
    /// abandoned, as rq's rules say); their outcome went to the old master and was lost.
    pub async fn reconcile(&self, running: &[String]) -> StoreResult<Vec<Recovered>> {
        self.recover_executions(&self.worker, "Redis master changed", running)
            .await
    }

    async fn recover_executions(
        &self,
        own: &str,
        why: &str,
        kept: &[String],
    ) -> StoreResult<Vec<Recovered>> {
        let mut conn = self.conn();
        let now = Utc::now();
        let message = format!(
            "Moved to FailedJobRegistry, due to AbandonedJobError, at {} ({why})",
            now.format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        );
        let exc = encode_exc_string(&message).unwrap_or_default();
        let mut inv = scripts::RECOVER_LAPSED.prepare_invoke();
        inv.arg(epoch_secs(now))
            .arg(utcformat(now))
            .arg(exc)
            .arg(own);
        for composite in kept {
            inv.arg(composite);
        }
        let out: Vec<Vec<String>> = inv.invoke_async(&mut conn).await?;
        Ok(out
            .into_iter()
            .filter_map(|row| match <[String; 4]>::try_from(row) {
                Ok([job_id, queue, status, hooks]) => Some(Recovered {
                    job_id,
                    queue,
                    status,
                    webhooks: hooks == "1",
                    exc_string: message.clone(),
                }),
                Err(_) => None,
            })
            .collect())
    }

    /// The job hash as it is now; `None` when the job is gone.
    pub async fn job_hash(&self, job_id: &str) -> StoreResult<Option<wire::JobHash>> {
        let mut conn = self.conn();
        let fields: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(keys::job(job_id))
            .query_async(&mut conn)
            .await?;
        Ok(wire::JobHash::from_fields(job_id.to_string(), fields).ok())
    }

    /// Jobs left in a queue's intermediate list by a worker that died between its blocking
    /// pop and its claim go back to the head of the queue once seen stale twice.
    async fn recover_intermediate(&self, queue: &str) -> StoreResult<()> {
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(keys::intermediate(queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        for id in ids {
            let seen_key = keys::intermediate_seen(queue, &id);
            let first: bool = redis::cmd("SET")
                .arg(&seen_key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(300)
                .query_async::<Option<String>>(&mut conn)
                .await?
                .is_some();
            if first {
                continue;
            }
            let status: Option<String> = redis::cmd("HGET")
                .arg(keys::job(&id))
                .arg("status")
                .query_async(&mut conn)
                .await?;
            if status.as_deref() == Some("queued") {
                let removed: i64 = redis::cmd("LREM")
                    .arg(keys::intermediate(queue))
                    .arg(1)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await?;
                if removed == 1 {
                    redis::cmd("LPUSH")
                        .arg(keys::queue(queue))
                        .arg(&id)
                        .query_async::<i64>(&mut conn)
                        .await?;
                    tracing::warn!(job_id = %id, queue, "requeued a job stranded in the intermediate list");
                }
            }
            redis::cmd("DEL")
                .arg(&seen_key)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Whether `rq suspend` is in force.
    pub async fn suspended(&self) -> StoreResult<bool> {
        let mut conn = self.conn();
        redis::cmd("EXISTS")
            .arg(keys::suspended())
            .query_async(&mut conn)
            .await
    }

    /// The queues paused from the console (mindora's own key; Python rq workers ignore it).
    pub async fn paused_queues(&self) -> StoreResult<std::collections::HashSet<String>> {
        let mut conn = self.conn();
        redis::cmd("SMEMBERS")
            .arg(keys::paused_queues())
            .query_async(&mut conn)
            .await
    }

    /// Length of each queue and the age of its oldest job, for metrics.
    pub async fn queue_stats(&self, queues: &[String]) -> StoreResult<Vec<(String, i64, f64)>> {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.llen(keys::queue(q)).lindex(keys::queue(q), 0);
        }
        let raw: Vec<(i64, Option<String>)> = {
            let flat: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            flat.chunks(2)
                .map(|c| {
                    let len = redis::from_redis_value_ref::<i64>(&c[0]).unwrap_or(0);
                    let head = c
                        .get(1)
                        .and_then(|v| redis::from_redis_value_ref::<Option<String>>(v).ok())
                        .flatten();
                    (len, head)
                })
                .collect()
        };
        let mut out = Vec::with_capacity(queues.len());
        for (q, (len, head)) in queues.iter().zip(raw) {
            let mut age = 0.0;
            if let Some(id) = head {
                let enq: Option<String> = redis::cmd("HGET")
                    .arg(keys::job(&id))
                    .arg("enqueued_at")
                    .query_async(&mut conn)
                    .await?;
                if let Some(t) = enq.as_deref().and_then(wire::time::parse_utc) {
                    age = (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0;
                }
            }
            out.push((q.clone(), len, age));
        }
        Ok(out)
    }
}
