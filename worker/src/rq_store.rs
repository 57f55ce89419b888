//! The worker's side of the rq protocol: claiming, finishing, failing, heartbeating,
//! scheduling, recovering, and registering as an rq worker. Every state change calls a
//! script from [`mindora_sdk::wire::scripts`], the one definition of rq's transitions.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mindora_sdk::wire::result::{encode_exc_string, failure_fields, success_fields, ResultType};
use mindora_sdk::wire::time::{epoch_float, epoch_secs, utcformat};
use mindora_sdk::wire::{self, keys, scripts, JobHash, Serializer};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};
use serde_json::Value;

/// Redis errors, as the worker sees them.
pub type StoreResult<T> = Result<T, redis::RedisError>;

/// A job this worker has claimed and started.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Job id.
    pub job_id: String,
    /// Queue it came from.
    pub queue: String,
    /// This execution's id.
    pub exec_id: String,
    /// The job hash as it was when claimed.
    pub hash: JobHash,
    /// When the claim happened.
    pub started_at: DateTime<Utc>,
}

/// How a failed execution ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailMode {
    /// Try again after `delay_secs` (0: queue at once).
    Retry {
        /// Seconds to wait in the scheduled registry.
        delay_secs: i64,
    },
    /// Final failure: the failed registry (dead letter).
    Failed,
    /// Stopped on request.
    Stopped,
}

/// Connection settings shared by the worker's Redis connections.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// Opens a reconnecting connection; `response_timeout` must exceed any blocking call.
pub async fn connect(url: &str, response_timeout: Duration) -> StoreResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_with_config(client, manager_config(response_timeout)).await
}

/// Worker-side rq operations over one multiplexed connection.
#[derive(Clone)]
pub struct RqStore {
    conn: ConnectionManager,
    worker: String,
}

impl RqStore {
    /// Wraps a connection for the worker named `worker`.
    pub fn new(conn: ConnectionManager, worker: impl Into<String>) -> Self {
        RqStore {
            conn,
            worker: worker.into(),
        }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The underlying connection.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Claims up to `max` jobs from `queues` in priority order. With `specific`, claims
    /// only that job id, which the caller has just moved into the (single) queue's
    /// intermediate list.
    pub async fn claim(
        &self,
        queues: &[String],
        max: usize,
        monitor_interval_secs: i64,
        grace_secs: i64,
        specific: Option<&str>,
    ) -> StoreResult<Vec<Claimed>> {
        let now = Utc::now();
        let prefix = &uuid::Uuid::new_v4().simple().to_string()[..28];
        let mut inv = scripts::CLAIM.prepare_invoke();
        inv.arg(&self.worker)
            .arg(utcformat(now))
            .arg(epoch_float(now))
            .arg(epoch_secs(now))
            .arg(max)
            .arg(prefix)
            .arg(monitor_interval_secs)
            .arg(grace_secs);
        match specific {
            Some(id) => {
                inv.arg("2").arg(id);
            }
            None => {
                inv.arg("0").arg("");
            }
        }
        for q in queues {
            inv.arg(q);
        }
        let mut conn = self.conn.clone();
        let rows: Vec<(String, String, String, Vec<Vec<u8>>)> = inv.invoke_async(&mut conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (job_id, queue, exec_id, flat) in rows {
            let mut fields = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                fields.insert(String::from_utf8_lossy(&k).into_owned(), v);
            }
            // The script only returns jobs whose hash exists, so this cannot be Missing.
            if let Ok(hash) = JobHash::from_fields(job_id.clone(), fields) {
                out.push(Claimed {
                    job_id,
                    queue,
                    exec_id,
                    hash,
                    started_at: now,
                });
            }
        }
        Ok(out)
    }

    /// The arguments `finish.lua` and `fail.lua` share, in their order: which execution
    /// ended, on which worker, when.
    fn outcome_call(
        &self,
        script: &'static Script,
        job: &Claimed,
        ended: DateTime<Utc>,
    ) -> ScriptInvocation<'static> {
        let mut inv = script.prepare_invoke();
        inv.arg(&job.job_id)
            .arg(&job.queue)
            .arg(&job.exec_id)
            .arg(&self.worker)
            .arg(utcformat(ended))
            .arg(epoch_secs(ended));
        inv
    }

    /// Records success: result, status, registries, TTLs, dependents. Returns the ids of
    /// dependents that became ready.
    pub async fn finish(
        &self,
        job: &Claimed,
        serializer: Serializer,
        value: &Value,
    ) -> Result<Vec<String>, FinishError> {
        let ended = Utc::now();
        let fields = success_fields(
            serializer,
            value,
            &self.worker,
            &job.exec_id,
            &epoch_float(job.started_at),
            &epoch_float(ended),
        )?;
        let result_ttl = job
            .hash
            .result_ttl()
            .unwrap_or(wire::DEFAULT_RESULT_TTL_SECS);
        let mut inv = self.outcome_call(&scripts::FINISH, job, ended);
        inv.arg(result_ttl).arg(working_secs(job.started_at, ended));
        push_fields(&mut inv, fields);
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// Records a failed execution; returns the job's new status.
    pub async fn fail(
        &self,
        job: &Claimed,
        mode: FailMode,
        exc_string: &str,
    ) -> Result<String, FinishError> {
        let ended = Utc::now();
        let (mode_arg, delay, kind) = match mode {
            FailMode::Retry { delay_secs } => ("retry", delay_secs, ResultType::Failed),
            FailMode::Failed => ("failed", 0, ResultType::Failed),
            FailMode::Stopped => ("stopped", 0, ResultType::Stopped),
        };
        let fields = failure_fields(
            kind,
            exc_string,
            &self.worker,
            &job.exec_id,
            &epoch_float(job.started_at),
            &epoch_float(ended),
        )?;
        let failure_ttl = job
            .hash
            .failure_ttl()
            .unwrap_or(wire::DEFAULT_FAILURE_TTL_SECS);
        let mut inv = self.outcome_call(&scripts::FAIL, job, ended);
        inv.arg(mode_arg)
            .arg(delay)
            .arg(failure_ttl)
            .arg(working_secs(job.started_at, ended));
        push_fields(&mut inv, fields);
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// Gives a job a retry policy it did not carry (the queue's default policy), so that
    /// rq's own fields describe what will happen to it.
    pub async fn adopt_retry_policy(
        &self,
        job_id: &str,
        policy: &wire::RetryPolicy,
    ) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let intervals =
            serde_json::to_string(&policy.rq_intervals()).unwrap_or_else(|_| "[]".into());
        let spec = serde_json::to_string(policy).unwrap_or_default();
        redis::cmd("HSET")
            .arg(keys::job(job_id))
            .arg(wire::job::field::RETRIES_LEFT)
            .arg(policy.retries())
            .arg(wire::job::field::RETRY_INTERVALS)
            .arg(intervals)
            .arg(wire::job::field::MINDORA_RETRY)
            .arg(spec)
            .query_async(&mut conn)
            .await
    }

    /// Writes `job.meta` (in the job's serializer).
    pub async fn write_meta(&self, job_id: &str, meta: Vec<u8>) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(keys::job(job_id))
            .arg(wire::job::field::META)
            .arg(meta)
            .query_async(&mut conn)
            .await
    }

    /// Heartbeats the worker and every running execution; false when the worker is no
    /// longer registered (the caller registers it again).
    pub async fn heartbeat(
        &self,
        running: &[(String, String, String, i64)],
        worker_ttl: i64,
    ) -> StoreResult<bool> {
        let now = Utc::now();
        let mut inv = scripts::HEARTBEAT.prepare_invoke();
        inv.arg(&self.worker)
            .arg(utcformat(now))
            .arg(epoch_float(now))
            .arg(epoch_secs(now))
            .arg(worker_ttl);
        for (job, queue, exec, ttl) in running {
            inv.arg(job).arg(queue).arg(exec).arg(ttl);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async::<i64>(&mut conn)
            .await
            .map(|alive| alive == 1)
    }

    /// Moves due scheduled jobs of `queue` onto it, if this worker holds (or takes) rq's
    /// scheduler lock for the queue. Returns how many moved.
    pub async fn run_scheduler(&self, queue: &str, lock_ttl_secs: u64) -> StoreResult<i64> {
        let mut conn = self.conn.clone();
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
        let mut conn = self.conn.clone();
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
    /// fleet does this per `every_secs`). Returns (job id, new status) pairs.
    pub async fn recover_abandoned(
        &self,
        queue: &str,
        every_secs: u64,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("mindora:recover-lock:{queue}"))
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
        let out: Vec<(String, String)> = scripts::RECOVER
            .prepare_invoke()
            .arg(queue)
            .arg(epoch_secs(now))
            .arg(utcformat(now))
            .arg(exc)
            .arg(&message)
            .invoke_async(&mut conn)
            .await?;
        self.recover_intermediate(queue).await?;
        Ok(out)
    }

    /// Jobs left in a queue's intermediate list by a worker that died between its blocking
    /// pop and its claim go back to the head of the queue once seen stale twice.
    async fn recover_intermediate(&self, queue: &str) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(keys::intermediate(queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        for id in ids {
            let seen_key = format!("mindora:intermediate-seen:{queue}:{id}");
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
            .sadd(keys::WORKERS, &key);
        for q in queues {
            pipe.sadd(keys::workers_by_queue(q), &key);
            pipe.sadd(keys::QUEUES, keys::queue(q));
        }
        pipe.expire(&key, wire::WORKER_TTL_SECS + 60);
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Sets the worker's `state` (`idle`, `busy`, `suspended`) and `current_job`.
    pub async fn set_state(&self, state: &str, current_job: Option<&str>) -> StoreResult<()> {
        let key = keys::worker(&self.worker);
        let mut pipe = redis::pipe();
        pipe.hset(&key, "state", state);
        match current_job {
            Some(j) => pipe.hset(&key, "current_job", j),
            None => pipe.hdel(&key, "current_job"),
        };
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Unregisters the worker (`Worker.register_death`).
    pub async fn register_death(&self, queues: &[String]) -> StoreResult<()> {
        let key = keys::worker(&self.worker);
        let mut pipe = redis::pipe();
        pipe.atomic().srem(keys::WORKERS, &key);
        for q in queues {
            pipe.srem(keys::workers_by_queue(q), &key);
        }
        pipe.hset(&key, "death", utcformat(Utc::now()))
            .hset(&key, "state", "dead")
            .expire(&key, 60)
            .del(keys::worker_executions(&self.worker));
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Whether `rq suspend` is in force.
    pub async fn suspended(&self) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(keys::SUSPENDED)
            .query_async(&mut conn)
            .await
    }

    /// Length of each queue and the age of its oldest job, for metrics.
    pub async fn queue_stats(&self, queues: &[String]) -> StoreResult<Vec<(String, i64, f64)>> {
        let mut conn = self.conn.clone();
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

/// Failure to record an outcome.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Redis is unreachable or refused the script.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The result could not be encoded in the job's serializer.
    #[error(transparent)]
    Codec(#[from] wire::serializer::CodecError),
}

/// Appends result-stream fields (name, value pairs) as the scripts' trailing arguments.
fn push_fields(inv: &mut ScriptInvocation<'_>, fields: Vec<(&'static str, String)>) {
    for (k, v) in fields {
        inv.arg(k).arg(v);
    }
}

fn working_secs(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!(
        "{:.6}",
        (end - start).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
    )
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
