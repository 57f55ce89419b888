//! Enqueue jobs and read their fate, writing exactly what Python rq writes, so a job
//! enqueued here runs on `mindora-worker` or on `rq worker` alike.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde_json::{Map, Value};

use crate::backlog::{read_backlog, QueueBacklog, DEFAULT_HORIZON_SECS};
use crate::connect::{ManagerOptions, RedisConn, RedisConnector};
use crate::error::SdkError;
use crate::options::{self, RateLimit, Repeat, Webhook};
use crate::wire::job::NewJob;
use crate::wire::result::{parse_entry, ResultEntry};
use crate::wire::time::{epoch_secs, utcformat};
use crate::wire::{keys, scripts, JobCall, JobHash, JobStatus, RetryPolicy, Serializer};

/// Per-job options of [`Client::enqueue`]; `Default` gives rq's defaults.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Explicit job id (default: a random uuid4 hex, as rq).
    pub job_id: Option<String>,
    /// Serializer for data, meta and result (default pickle, as rq).
    pub serializer: Serializer,
    /// Push to the head of the queue instead of the tail.
    pub at_front: bool,
    /// Retry policy: rq's list, or exponential with jitter.
    pub retry: Option<RetryPolicy>,
    /// Job timeout in seconds (default 180; -1 for none).
    pub timeout_secs: Option<i64>,
    /// How long the result is kept (default 500 s; -1 forever; 0 not at all).
    pub result_ttl_secs: Option<i64>,
    /// How long the job may wait unrun before it expires.
    pub ttl_secs: Option<i64>,
    /// How long a failed job is kept (default one year).
    pub failure_ttl_secs: Option<i64>,
    /// Parent job ids; the job waits (deferred) until all have finished.
    pub depends_on: Vec<String>,
    /// Run no earlier than this time (rq's `enqueue_at`).
    pub at: Option<DateTime<Utc>>,
    /// Run after this delay (rq's `enqueue_in`).
    pub delay: Option<Duration>,
    /// Initial `job.meta`.
    pub meta: Map<String, Value>,
    /// rq 3.0 `RateLimit`: the job waits as `rate_limited` while `concurrency` jobs of the
    /// key are queued or running (honoured by rq 3.0 workers and `mindora-worker`).
    pub rate_limit: Option<RateLimit>,
    /// rq `Repeat`: run again after each success, `times` more times.
    pub repeat: Option<Repeat>,
    /// rq `Webhook`s sent when the job finishes or fails.
    pub webhooks: Vec<Webhook>,
}

/// A handle on an enqueued job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueuedJob {
    /// The job id, as Python's `job.id`.
    pub id: String,
    /// Status right after enqueue: queued, scheduled or deferred.
    pub status: JobStatus,
    /// Serializer the result will come back in.
    pub serializer: Serializer,
}

/// An rq client over one Redis database.
#[derive(Clone)]
pub struct Client {
    conn: RedisConn,
}

impl Client {
    /// Connects (with automatic reconnection) to `redis_url`: `redis://127.0.0.1/0`,
    /// `rediss://user:pass@host:6380/0` (TLS, system roots), or
    /// `redis+sentinel://host:26379/<master>/0`. CA files, client certificates and
    /// passwords from files go through [`Client::connect_with`].
    pub async fn connect(redis_url: &str) -> Result<Self, SdkError> {
        Self::connect_with(&RedisConnector::from_url(redis_url)?).await
    }

    /// Connects with full settings (TLS files, ACL user, Sentinel); under Sentinel the
    /// client follows the master through failovers.
    pub async fn connect_with(connector: &RedisConnector) -> Result<Self, SdkError> {
        Ok(Client {
            conn: connector.manager(&ManagerOptions::default()).await?,
        })
    }

    /// Wraps an existing connection manager.
    pub fn from_connection(conn: ConnectionManager) -> Self {
        Client { conn: conn.into() }
    }

    /// The true backlog of each queue (queued, scheduled soon, started, deferred), read in
    /// one round trip; see [`crate::backlog`].
    pub async fn backlog(&self, queues: &[String]) -> Result<Vec<QueueBacklog>, SdkError> {
        let mut conn = self.conn.clone();
        Ok(read_backlog(&mut conn, queues, DEFAULT_HORIZON_SECS).await?)
    }

    /// Enqueues `function(*args, **kwargs)` on `queue` (the queue name is the priority lane:
    /// workers drain their queues in the order they were given). A job with a
    /// [`RateLimit`] and no free slot comes back `rate_limited`, as from rq 3.0.
    pub async fn enqueue(
        &self,
        queue: &str,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: EnqueueOptions,
    ) -> Result<EnqueuedJob, SdkError> {
        if options.at.is_some() && options.delay.is_some() {
            return Err(SdkError::InvalidOptions(
                "give `at` or `delay`, not both".into(),
            ));
        }
        let now = Utc::now();
        let mut job = NewJob::new(
            queue,
            JobCall {
                function: function.to_string(),
                args,
                kwargs,
            },
        );
        if let Some(id) = options.job_id {
            job.id = id;
        }
        job.serializer = options.serializer;
        job.timeout_secs = options.timeout_secs;
        job.result_ttl_secs = options.result_ttl_secs;
        job.failure_ttl_secs = options.failure_ttl_secs;
        job.ttl_secs = options.ttl_secs;
        job.meta = options.meta;
        crate::wire::trace::inject_into_meta(&mut job.meta, &crate::trace::current());
        job.retry = options.retry;
        job.depends_on = options.depends_on;
        job.at_front = options.at_front;
        let at = options.at.or_else(|| {
            options
                .delay
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d)
        });
        // Fields without status/enqueued_at: the script sets them with the outcome.
        let mut fields = job.fields(JobStatus::Created, now)?;
        fields.extend(options::fields(
            options.rate_limit.as_ref(),
            options.repeat.as_ref(),
            &options.webhooks,
        )?);
        let mut inv = scripts::ENQUEUE.prepare_invoke();
        inv.arg(&job.id)
            .arg(&job.queue)
            .arg(utcformat(now))
            .arg(epoch_secs(now))
            .arg(at.map(|t| epoch_secs(t).to_string()).unwrap_or_default())
            .arg(if job.at_front { "1" } else { "0" })
            .arg(job.ttl_secs.map(|t| t.to_string()).unwrap_or_default())
            .arg(job.depends_on.len());
        for dep in &job.depends_on {
            inv.arg(dep);
        }
        for (name, value) in fields.iter().filter(|(n, _)| *n != "status") {
            inv.arg(*name).arg(value.as_slice());
        }
        let mut conn = self.conn.clone();
        let outcome: String = inv.invoke_async(&mut conn).await?;
        Ok(EnqueuedJob {
            id: job.id,
            status: outcome.parse().unwrap_or(JobStatus::Queued),
            serializer: job.serializer,
        })
    }

    /// Reads the job hash.
    pub async fn job(&self, job_id: &str) -> Result<JobHash, SdkError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(keys::job(job_id))
            .query_async(&mut conn)
            .await?;
        Ok(JobHash::from_fields(job_id, fields)?)
    }

    /// The job's status, as Python's `job.get_status()`.
    pub async fn status(&self, job_id: &str) -> Result<JobStatus, SdkError> {
        let job = self.job(job_id).await?;
        job.status().ok_or_else(|| {
            SdkError::Codec(crate::wire::serializer::CodecError::Shape(
                "unknown status".into(),
            ))
        })
    }

    /// The latest result entry, as Python's `job.latest_result()`; `None` before any.
    pub async fn latest_result(
        &self,
        job_id: &str,
        serializer: Serializer,
    ) -> Result<Option<ResultEntry>, SdkError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(keys::results(job_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        match entries.into_iter().next() {
            Some((_, fields)) => Ok(Some(parse_entry(&fields, serializer)?)),
            None => Ok(None),
        }
    }

    /// Waits until the job ends; returns its return value, or [`SdkError::JobFailed`] with
    /// the worker's error text, or [`SdkError::Timeout`].
    pub async fn wait(&self, job: &EnqueuedJob, timeout: Duration) -> Result<Value, SdkError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let status = self.status(&job.id).await?;
            if status.is_terminal() {
                let entry = self.latest_result(&job.id, job.serializer).await?;
                return match (status, entry) {
                    (JobStatus::Finished, Some(e)) => Ok(e.return_value.unwrap_or(Value::Null)),
                    (JobStatus::Finished, None) => Ok(Value::Null),
                    (other, e) => Err(SdkError::JobFailed {
                        job_id: job.id.clone(),
                        status: other.to_string(),
                        message: e.and_then(|e| e.exc_string).unwrap_or_default(),
                    }),
                };
            }
            if started.elapsed() >= timeout {
                return Err(SdkError::Timeout {
                    job_id: job.id.clone(),
                    status: status.to_string(),
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Cancels a job that has not started (rq's `job.cancel()`); returns the status it had.
    pub async fn cancel(&self, job_id: &str) -> Result<Option<JobStatus>, SdkError> {
        let mut conn = self.conn.clone();
        let now = Utc::now();
        let previous: String = scripts::CANCEL
            .prepare_invoke()
            .arg(job_id)
            .arg(epoch_secs(now))
            .arg(utcformat(now))
            .invoke_async(&mut conn)
            .await?;
        Ok(previous.parse().ok())
    }
}
