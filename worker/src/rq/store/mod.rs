//! The worker's side of the rq protocol, and the only code that talks to Redis: claiming
//! ([`RqStore::claim`]), recording outcomes (`outcome`), the worker's own registration and
//! heartbeat (`registration`), and fleet upkeep (`upkeep`); successes that end close
//! together are recorded in one script call (`batch`). Every state change of a job
//! calls a script from [`mindora_sdk::wire::scripts`], the one definition of rq's
//! transitions; every key comes from [`mindora_sdk::wire::keys`].

mod batch;
mod outcome;
mod registration;
mod upkeep;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mindora_sdk::wire::time::{epoch_float, epoch_secs, utcformat};
use mindora_sdk::wire::{keys, scripts, JobHash};
use mindora_sdk::RedisConn;

pub use outcome::{FailMode, FinishError};
pub use registration::hostname;
pub use upkeep::Recovered;

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

/// One running execution, as the heartbeat reports it.
#[derive(Debug, Clone)]
pub struct Beat {
    /// Job id.
    pub job_id: String,
    /// Queue.
    pub queue: String,
    /// Execution id.
    pub exec_id: String,
    /// Seconds until the execution counts as abandoned without another heartbeat.
    pub ttl_secs: i64,
}

/// Worker-side rq operations: a multiplexed connection for commands and scripts, and one
/// of its own for blocking pops (a blocking pop stalls every other command on its
/// connection).
#[derive(Clone)]
pub struct RqStore {
    conn: RedisConn,
    blocking: RedisConn,
    worker: String,
    lease_ms: u64,
    finisher: batch::Finisher,
}

impl RqStore {
    /// The store of the worker named `worker`.
    pub fn new(conn: RedisConn, blocking: RedisConn, worker: impl Into<String>) -> Self {
        RqStore {
            conn,
            blocking,
            worker: worker.into(),
            lease_ms: 0,
            finisher: batch::Finisher::default(),
        }
    }

    /// Keeps a liveness lease of `lease` (renewed by every heartbeat), so that surviving
    /// workers recover this worker's jobs within seconds of its death; zero keeps none.
    pub fn with_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease_ms = lease.as_millis() as u64;
        self
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The command connection, for self-contained readers such as [`crate::backlog`].
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Claims up to `max` jobs from `queues` in priority order, in one script call. With
    /// `specific`, claims only that job id, which [`RqStore::wait_pop`] has just moved
    /// into the (single) queue's intermediate list.
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
        let mut conn = self.conn();
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

    /// Waits up to `timeout_secs` for a job on `lane`, moving its id into the lane's
    /// intermediate list (`BLMOVE`), so a worker killed between pop and claim loses
    /// nothing (recovery puts stranded ids back). Returns the id popped.
    pub async fn wait_pop(&self, lane: &str, timeout_secs: f64) -> StoreResult<Option<String>> {
        let mut conn = self.blocking.clone();
        redis::cmd("BLMOVE")
            .arg(keys::queue(lane))
            .arg(keys::intermediate(lane))
            .arg("LEFT")
            .arg("RIGHT")
            .arg(timeout_secs)
            .query_async::<Option<String>>(&mut conn)
            .await
    }
}
