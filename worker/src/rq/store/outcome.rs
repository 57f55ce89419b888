//! Recording outcomes: the settle path's only way into Redis. Each outcome is one script
//! call from [`mindora_sdk::wire::scripts`].

use chrono::{DateTime, Utc};
use mindora_sdk::wire::result::{
    failure_fields, success_fields, success_fields_encoded, ResultType,
};
use mindora_sdk::wire::scripts::RqScript;
use mindora_sdk::wire::time::{epoch_float, epoch_secs, utcformat};
use mindora_sdk::wire::{self, keys, scripts, Serializer};
use redis::ScriptInvocation;

use super::batch::FinishArgs;
use super::{Claimed, RqStore, StoreResult};
use crate::handler::Output;

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

impl RqStore {
    /// The arguments `finish.lua` and `fail.lua` share, in their order: which execution
    /// ended, on which worker, when.
    fn outcome_call(
        &self,
        script: &'static RqScript,
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
    /// dependents that became ready. `callbacks_run`: the job's `on_success` already ran (a
    /// Python pool), so no `mindora_callbacks_not_run` note is written.
    pub async fn finish(
        &self,
        job: &Claimed,
        serializer: Serializer,
        output: &Output,
        callbacks_run: bool,
    ) -> Result<Vec<String>, FinishError> {
        let ended = Utc::now();
        let (started, end) = (epoch_float(job.started_at), epoch_float(ended));
        let fields = match output {
            Output::Value(value) => success_fields(
                serializer,
                value,
                &self.worker,
                &job.exec_id,
                &started,
                &end,
            )?,
            Output::Serialized(bytes) => {
                success_fields_encoded(bytes, &self.worker, &job.exec_id, &started, &end)
            }
        };
        let result_ttl = job
            .hash
            .result_ttl()
            .unwrap_or(wire::DEFAULT_RESULT_TTL_SECS);
        let mut args: Vec<Vec<u8>> = [
            job.job_id.clone(),
            job.queue.clone(),
            job.exec_id.clone(),
            utcformat(ended),
            epoch_secs(ended).to_string(),
            result_ttl.to_string(),
            working_secs(job.started_at, ended),
            u8::from(callbacks_run).to_string(),
            fields.len().to_string(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        for (k, v) in fields {
            args.push(k.as_bytes().to_vec());
            args.push(v.into_bytes());
        }
        let (status, moved) = self
            .finisher
            .finish(&self.conn, &self.worker, FinishArgs(args))
            .await?;
        match status.as_str() {
            "stale" => {
                return Err(FinishError::Stale(format!(
                    "execution {} of job {} was recovered; its outcome is dropped",
                    job.exec_id, job.job_id
                )))
            }
            "error" => return Err(FinishError::Script(moved.join("; "))),
            "gone" => {}
            _ => {
                let hooks = crate::webhooks::Terminal::Finished;
                crate::webhooks::dispatch(&job.hash, hooks, ended, None);
            }
        }
        Ok(moved)
    }

    /// Records a failed execution; returns the job's new status. `callbacks_run`: the job's
    /// `on_failure` / `on_stopped` already ran (a Python pool): no `mindora_callbacks_not_run`.
    pub async fn fail(
        &self,
        job: &Claimed,
        mode: FailMode,
        exc_string: &str,
        callbacks_run: bool,
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
            .arg(working_secs(job.started_at, ended))
            .arg(u8::from(callbacks_run));
        push_fields(&mut inv, fields);
        let mut conn = self.conn();
        let status: String = inv
            .invoke_async(&mut conn)
            .await
            .map_err(FinishError::from_redis)?;
        if status == "failed" {
            let hooks = crate::webhooks::Terminal::Failed;
            crate::webhooks::dispatch(&job.hash, hooks, ended, Some(exc_string));
        }
        Ok(status)
    }

    /// Gives a job a retry policy it did not carry (the queue's default policy), so that
    /// rq's own fields describe what will happen to it.
    pub async fn adopt_retry_policy(
        &self,
        job_id: &str,
        policy: &wire::RetryPolicy,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
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
        let mut conn = self.conn();
        redis::cmd("HSET")
            .arg(keys::job(job_id))
            .arg(wire::job::field::META)
            .arg(meta)
            .query_async(&mut conn)
            .await
    }

    /// Gives a started job back to the head of its queue without spending an attempt
    /// (shutdown grace ran out). Returns false when the job hash is gone; fails with
    /// [`FinishError::Stale`] when the execution was already recovered.
    pub async fn requeue(&self, job: &Claimed) -> Result<bool, FinishError> {
        let mut conn = self.conn();
        scripts::REQUEUE
            .prepare_invoke()
            .arg(&job.job_id)
            .arg(&job.queue)
            .arg(&job.exec_id)
            .arg(&self.worker)
            .arg(utcformat(Utc::now()))
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|n| n == 1)
            .map_err(FinishError::from_redis)
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
    /// Fencing: the execution was recovered (its worker's lease lapsed, or rq's TTL rule)
    /// and the job belongs to a newer execution; this late outcome was dropped.
    #[error("stale execution: {0}")]
    Stale(String),
    /// The script could not record this job (e.g. one of its keys holds the wrong type);
    /// writing again would not help.
    #[error("recording failed in Redis: {0}")]
    Script(String),
}

impl FinishError {
    /// Sorts a script error: the outcome scripts refuse a recovered execution with `STALE`.
    fn from_redis(e: redis::RedisError) -> Self {
        if e.code() == Some("STALE") {
            FinishError::Stale(e.detail().unwrap_or_default().to_string())
        } else {
            FinishError::Redis(e)
        }
    }

    /// Whether writing again may succeed (Redis unreachable), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, FinishError::Redis(_))
    }
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
