//! The task message contract: queue and header names, the envelope, attempt history and
//! the reply. Plain data (no AMQP library), so publishers that are not this crate's client,
//! and the worker, share it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The work queue apps publish AI tasks to (the system design's name).
pub const DEFAULT_QUEUE: &str = "ai_processing_tasks";
/// Content type of envelopes and replies; anything else is still parsed, but this is what
/// publishers should say.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP `type` property of task messages, so mixed traffic can be told apart in tooling.
pub const MESSAGE_TYPE: &str = "mindora.task";
/// Exchange the worker dead-letters to; each `<queue>.dlq` is bound to it.
pub const DLX_EXCHANGE: &str = "mindora.dlx";

/// Header: the attempt a (re)delivered message is on. Kept in a header rather than the
/// body so the body travels byte-for-byte unchanged through retries into the DLQ.
pub const HEADER_ATTEMPT: &str = "x-mindora-attempt";
/// Header: JSON array of [`AttemptRecord`], one per failed attempt so far.
pub const HEADER_HISTORY: &str = "x-mindora-history";
/// Header: the last error, `Kind: message`, on dead-lettered messages.
pub const HEADER_ERROR: &str = "x-mindora-error";
/// Header: why a message was dead-lettered (`max_attempts`, `permanent_error`,
/// `malformed`).
pub const HEADER_DEAD_REASON: &str = "x-mindora-dead-reason";
/// Header: the work queue a dead-lettered message came from.
pub const HEADER_QUEUE: &str = "x-mindora-queue";

/// Name of the dead-letter queue of `queue`.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Name of the delayed-retry queue of `queue` holding messages for `delay_secs`.
pub fn retry_queue_name(queue: &str, delay_secs: u64) -> String {
    format!("{queue}.retry.{delay_secs}")
}

fn one() -> u32 {
    1
}

/// One task, as JSON in the message body. Only `function` is required; everything else
/// has a default so hand-written publishers (curl to the management API, a shell script)
/// stay easy. Unknown fields are ignored so newer publishers can add fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Task id; the worker falls back to the `message_id` property, then a fresh UUID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Registered handler name, e.g. `mindora.echo`.
    pub function: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// The attempt the publisher starts at (1); the worker's `x-mindora-attempt` header
    /// wins on retried copies.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Attempts before the message goes to the DLQ; the worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// 0..=10 on `ai_processing_tasks`; mirrored into the AMQP `priority` property, which
    /// is what the broker orders by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// RFC 3339 time the task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Trace id to stitch logs of one request across apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Correlation id of the business request (the AMQP property is used for RPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Per-task handler timeout; the worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl Envelope {
    /// A first attempt at `function(*args)` with a fresh id and the current time.
    pub fn new(function: impl Into<String>, args: Vec<Value>) -> Self {
        Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            function: function.into(),
            args,
            kwargs: Map::new(),
            attempt: 1,
            max_attempts: None,
            priority: None,
            created_at: Some(chrono::Utc::now().to_rfc3339()),
            trace_id: None,
            correlation_id: None,
            timeout_secs: None,
        }
    }

    /// Sets keyword arguments.
    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// Sets the priority (higher runs first on a priority queue).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the attempt budget.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Checks what serde cannot: the worker rejects these to the DLQ as malformed.
    pub fn validate(&self) -> Result<(), String> {
        if self.function.trim().is_empty() {
            return Err("\"function\" is empty".into());
        }
        if self.attempt == 0 {
            return Err("\"attempt\" must be >= 1".into());
        }
        if self.max_attempts == Some(0) {
            return Err("\"max_attempts\" must be >= 1".into());
        }
        Ok(())
    }
}

/// One failed attempt, as recorded in [`HEADER_HISTORY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Error kind (like a Python exception class).
    pub kind: String,
    /// Error message.
    pub message: String,
    /// RFC 3339 time of the failure.
    pub at: String,
}

/// The error half of a [`Reply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyError {
    /// Error kind.
    pub kind: String,
    /// Error message.
    pub message: String,
}

/// What the worker publishes to `reply_to` once a task has a final outcome (success or
/// dead-lettered); retries stay silent so the caller keeps waiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Task id.
    pub id: String,
    /// Whether the handler succeeded.
    pub ok: bool,
    /// The handler's return value when `ok`.
    #[serde(default)]
    pub result: Value,
    /// The final error when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
    /// Attempt that produced this outcome.
    pub attempt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_envelope_parses_with_defaults() {
        let env: Envelope = serde_json::from_str(r#"{"function":"mindora.noop"}"#).unwrap();
        assert_eq!(env.attempt, 1);
        assert!(env.args.is_empty() && env.kwargs.is_empty());
        assert!(env.validate().is_ok());
        let bad: Envelope = serde_json::from_str(r#"{"function":" "}"#).unwrap();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"args":[]}"#).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(dlq_name("q"), "q.dlq");
        assert_eq!(retry_queue_name("q", 25), "q.retry.25");
    }
}
