//! The job hash (`rq:job:<id>`): reading what rq (or we) wrote, and building a new one
//! field for field as `rq.job.Job.to_dict` does.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::retry::RetryPolicy;
use super::serializer::{self, CodecError, JobCall, Serializer};
use super::status::JobStatus;
use super::time::{parse_utc, utcformat};

/// Hash field names, spelled as rq spells them.
pub mod field {
    #![allow(missing_docs)]
    pub const STATUS: &str = "status";
    pub const CREATED_AT: &str = "created_at";
    pub const DATA: &str = "data";
    pub const SUCCESS_CALLBACK_NAME: &str = "success_callback_name";
    pub const FAILURE_CALLBACK_NAME: &str = "failure_callback_name";
    pub const STOPPED_CALLBACK_NAME: &str = "stopped_callback_name";
    pub const STARTED_AT: &str = "started_at";
    pub const ENDED_AT: &str = "ended_at";
    pub const LAST_HEARTBEAT: &str = "last_heartbeat";
    pub const WORKER_NAME: &str = "worker_name";
    pub const GROUP_ID: &str = "group_id";
    pub const RETRIES_LEFT: &str = "retries_left";
    pub const RETRY_INTERVALS: &str = "retry_intervals";
    pub const ENQUEUE_AT_FRONT_ON_RETRY: &str = "enqueue_at_front_on_retry";
    pub const ORIGIN: &str = "origin";
    pub const DESCRIPTION: &str = "description";
    pub const ENQUEUED_AT: &str = "enqueued_at";
    pub const TIMEOUT: &str = "timeout";
    pub const RESULT_TTL: &str = "result_ttl";
    pub const FAILURE_TTL: &str = "failure_ttl";
    pub const TTL: &str = "ttl";
    pub const META: &str = "meta";
    pub const DEPENDENCY_ID: &str = "dependency_id";
    pub const DEPENDENCY_IDS: &str = "dependency_ids";
    pub const ALLOW_DEPENDENCY_FAILURES: &str = "allow_dependency_failures";
    pub const ENQUEUE_AT_FRONT: &str = "enqueue_at_front";
    /// mindora's own field (rq ignores unknown fields): the exponential retry policy with
    /// jitter; `retries_left`/`retry_intervals` still carry an rq-readable equivalent.
    pub const MINDORA_RETRY: &str = "mindora_retry";
    /// rq >= 2.3 `Repeat`: runs still to come after the current one.
    pub const REPEATS_LEFT: &str = "repeats_left";
    /// rq >= 2.3 `Repeat`: JSON list of the intervals still to use.
    pub const REPEAT_INTERVALS: &str = "repeat_intervals";
    /// rq >= 2.10 `Webhook`s: JSON list of `{url, job_status, method, headers, timeout}`.
    pub const WEBHOOKS: &str = "webhooks";
    /// rq 3.0 `RateLimit.key`.
    pub const RATE_LIMIT_KEY: &str = "rate_limit_key";
    /// rq 3.0 `RateLimit.concurrency`.
    pub const RATE_LIMIT_CONCURRENCY: &str = "rate_limit_concurrency";
    /// mindora's own field: which Python callbacks of the job were not run, and why.
    pub const MINDORA_CALLBACKS_NOT_RUN: &str = "mindora_callbacks_not_run";
    /// mindora's own field: retries scheduled so far by mindora (rq's exception retries keep
    /// no count; rq's `number_of_retries` counts only returned `Retry` results), so each
    /// attempt knows its number for the job history.
    pub const MINDORA_RETRIES: &str = "mindora_retries";
}

/// A job hash as read with `HGETALL`.
#[derive(Debug, Clone)]
pub struct JobHash {
    /// The job id (from the key, not the hash).
    pub id: String,
    fields: HashMap<String, Vec<u8>>,
}

/// Why a job hash is unusable.
#[derive(Debug, thiserror::Error)]
pub enum JobHashError {
    /// `HGETALL` returned nothing: the job expired or was deleted.
    #[error("job {0} does not exist")]
    Missing(String),
    /// A field rq always writes is absent or malformed.
    #[error("job {id}: field {field} is malformed: {reason}")]
    BadField {
        /// Job id.
        id: String,
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl JobHash {
    /// Wraps the raw fields of `rq:job:<id>`.
    pub fn from_fields(
        id: impl Into<String>,
        fields: HashMap<String, Vec<u8>>,
    ) -> Result<Self, JobHashError> {
        let id = id.into();
        if fields.is_empty() {
            return Err(JobHashError::Missing(id));
        }
        Ok(JobHash { id, fields })
    }

    /// A raw field.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name).map(Vec::as_slice)
    }

    /// A non-empty UTF-8 field.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.raw(name)
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.text(name).and_then(|s| s.trim().parse().ok())
    }

    /// The job's status; `created` when absent, as rq falls back.
    pub fn status(&self) -> Option<JobStatus> {
        match self.text(field::STATUS) {
            None => Some(JobStatus::Created),
            Some(s) => s.parse().ok(),
        }
    }

    /// The queue the job was enqueued on.
    pub fn origin(&self) -> Option<&str> {
        self.text(field::ORIGIN)
    }

    /// Decodes `data` into the call and the serializer to answer in.
    pub fn call(&self) -> Result<(Serializer, JobCall), CodecError> {
        serializer::decode_job_data(self.raw(field::DATA).ok_or(CodecError::MissingData)?)
    }

    /// Timeout in seconds; `None` means rq's default; negative means no timeout.
    pub fn timeout_secs(&self) -> Option<i64> {
        self.text(field::TIMEOUT).and_then(parse_timeout)
    }

    /// `result_ttl` (None: default; -1: forever; 0: delete at once).
    pub fn result_ttl(&self) -> Option<i64> {
        self.int(field::RESULT_TTL)
    }

    /// `failure_ttl` (None: default one year).
    pub fn failure_ttl(&self) -> Option<i64> {
        self.int(field::FAILURE_TTL)
    }

    /// Retries left under rq's `Retry`, if the job carries a retry policy.
    pub fn retries_left(&self) -> Option<i64> {
        self.int(field::RETRIES_LEFT)
    }

    /// Retries mindora scheduled so far ([`field::MINDORA_RETRIES`]).
    pub fn mindora_retries(&self) -> Option<i64> {
        self.int(field::MINDORA_RETRIES)
    }

    /// rq's `retry_intervals` (seconds).
    pub fn retry_intervals(&self) -> Option<Vec<i64>> {
        self.text(field::RETRY_INTERVALS)
            .and_then(|s| serde_json::from_str::<Vec<f64>>(s).ok())
            .map(|v| v.into_iter().map(|f| f as i64).collect())
    }

    /// mindora's exponential policy, when the job was enqueued with one.
    pub fn mindora_retry(&self) -> Option<RetryPolicy> {
        self.text(field::MINDORA_RETRY)
            .and_then(|s| serde_json::from_str(s).ok())
    }

    /// `enqueue_at_front_on_retry`.
    pub fn enqueue_at_front_on_retry(&self) -> bool {
        self.int(field::ENQUEUE_AT_FRONT_ON_RETRY).unwrap_or(0) != 0
    }

    /// Ids of the jobs this one depends on.
    pub fn dependency_ids(&self) -> Vec<String> {
        if let Some(ids) = self
            .text(field::DEPENDENCY_IDS)
            .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        {
            return ids;
        }
        self.text(field::DEPENDENCY_ID)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    }

    /// When the job was enqueued.
    pub fn enqueued_at(&self) -> Option<DateTime<Utc>> {
        self.text(field::ENQUEUED_AT).and_then(parse_utc)
    }

    /// When the current or last execution started.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.text(field::STARTED_AT).and_then(parse_utc)
    }

    /// When the last execution ended.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.text(field::ENDED_AT).and_then(parse_utc)
    }

    /// The worker that ran (or runs) the job.
    pub fn worker_name(&self) -> Option<&str> {
        self.text(field::WORKER_NAME)
    }

    /// Decoded `meta` (empty when absent or unreadable).
    pub fn meta(&self, serializer: Serializer) -> Map<String, Value> {
        self.raw(field::META)
            .filter(|b| !b.is_empty())
            .and_then(|b| serializer.loads(b).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// rq's `parse_timeout`: an integer, or a number with a `s`/`m`/`h`/`d` suffix.
pub fn parse_timeout(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        return Some(f as i64);
    }
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = digits.trim().parse().ok()?;
    let mul = match unit.to_ascii_lowercase().as_str() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(n * mul)
}

/// Everything needed to write a brand-new job hash.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id (rq uses a uuid4 hex by default).
    pub id: String,
    /// Queue (lane) name.
    pub queue: String,
    /// What to call.
    pub call: JobCall,
    /// Serializer for data, meta and results.
    pub serializer: Serializer,
    /// Timeout in seconds (rq default 180; -1 for none).
    pub timeout_secs: Option<i64>,
    /// How long a result is kept.
    pub result_ttl_secs: Option<i64>,
    /// How long a failed job is kept.
    pub failure_ttl_secs: Option<i64>,
    /// How long the job may wait before it is dropped unrun.
    pub ttl_secs: Option<i64>,
    /// Initial meta.
    pub meta: Map<String, Value>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// Ids of parent jobs.
    pub depends_on: Vec<String>,
    /// Whether the job is pushed to the head of its queue.
    pub at_front: bool,
}

impl NewJob {
    /// A job with rq's defaults.
    pub fn new(queue: impl Into<String>, call: JobCall) -> Self {
        NewJob {
            id: uuid::Uuid::new_v4().simple().to_string(),
            queue: queue.into(),
            call,
            serializer: Serializer::Pickle,
            timeout_secs: None,
            result_ttl_secs: None,
            failure_ttl_secs: None,
            ttl_secs: None,
            meta: Map::new(),
            retry: None,
            depends_on: Vec::new(),
            at_front: false,
        }
    }

    /// rq's `get_call_string`: `func(1, 'a', k=2)`, used as the job description.
    pub fn description(&self) -> String {
        let mut parts: Vec<String> = self.call.args.iter().map(py_repr).collect();
        parts.extend(
            self.call
                .kwargs
                .iter()
                .map(|(k, v)| format!("{k}={}", py_repr(v))),
        );
        format!("{}({})", self.call.function, parts.join(", "))
    }

    /// The hash fields, in the order `Job.to_dict` emits them. `enqueued_at` is set only for
    /// queued jobs, as rq does.
    pub fn fields(
        &self,
        status: JobStatus,
        now: DateTime<Utc>,
    ) -> Result<Vec<(&'static str, Vec<u8>)>, CodecError> {
        let mut f: Vec<(&'static str, Vec<u8>)> = vec![
            (field::CREATED_AT, utcformat(now).into_bytes()),
            (
                field::DATA,
                serializer::encode_job_data(self.serializer, &self.call)?,
            ),
            (field::SUCCESS_CALLBACK_NAME, Vec::new()),
            (field::FAILURE_CALLBACK_NAME, Vec::new()),
            (field::STOPPED_CALLBACK_NAME, Vec::new()),
            (field::STARTED_AT, Vec::new()),
            (field::ENDED_AT, Vec::new()),
            (field::LAST_HEARTBEAT, Vec::new()),
            (field::WORKER_NAME, Vec::new()),
            (field::GROUP_ID, Vec::new()),
        ];
        if let Some(policy) = &self.retry {
            f.push((
                field::RETRIES_LEFT,
                policy.retries().to_string().into_bytes(),
            ));
            f.push((
                field::RETRY_INTERVALS,
                serde_json::to_vec(&policy.rq_intervals())?,
            ));
            if let RetryPolicy::Exponential { .. } = policy {
                f.push((field::MINDORA_RETRY, serde_json::to_vec(policy)?));
            }
        }
        f.push((field::ORIGIN, self.queue.clone().into_bytes()));
        f.push((field::DESCRIPTION, self.description().into_bytes()));
        if status == JobStatus::Queued {
            f.push((field::ENQUEUED_AT, utcformat(now).into_bytes()));
        }
        f.push((
            field::TIMEOUT,
            self.timeout_secs
                .unwrap_or(super::DEFAULT_JOB_TIMEOUT_SECS)
                .to_string()
                .into_bytes(),
        ));
        if let Some(t) = self.result_ttl_secs {
            f.push((field::RESULT_TTL, t.to_string().into_bytes()));
        }
        if let Some(t) = self.failure_ttl_secs {
            f.push((field::FAILURE_TTL, t.to_string().into_bytes()));
        }
        f.push((field::STATUS, status.as_str().as_bytes().to_vec()));
        if let Some(first) = self.depends_on.first() {
            f.push((field::DEPENDENCY_ID, first.clone().into_bytes()));
            f.push((field::DEPENDENCY_IDS, serde_json::to_vec(&self.depends_on)?));
        }
        if !self.meta.is_empty() {
            f.push((
                field::META,
                self.serializer.dumps(&Value::Object(self.meta.clone()))?,
            ));
        }
        if let Some(t) = self.ttl_secs {
            f.push((field::TTL, t.to_string().into_bytes()));
        }
        if self.at_front {
            f.push((field::ENQUEUE_AT_FRONT, b"1".to_vec()));
        }
        Ok(f)
    }
}

/// A Python-ish `repr` for descriptions.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeouts_parse_like_rq() {
        assert_eq!(parse_timeout("180"), Some(180));
        assert_eq!(parse_timeout("2m"), Some(120));
        assert_eq!(parse_timeout("1h"), Some(3600));
        assert_eq!(parse_timeout("-1"), Some(-1));
        assert_eq!(parse_timeout("x"), None);
    }

    #[test]
    fn description_matches_rq_call_string() {
        let mut kwargs = Map::new();
        kwargs.insert("y".into(), json!(3));
        let job = NewJob::new(
            "default",
            JobCall {
                function: "jobs.ok".into(),
                args: vec![json!(2), json!("a'b")],
                kwargs,
            },
        );
        assert_eq!(job.description(), r"jobs.ok(2, 'a\'b', y=3)");
    }
}
