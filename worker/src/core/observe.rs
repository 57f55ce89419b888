//! What happened to each attempt, for whoever keeps a record of them (the job history of
//! `mindora-history`, issue 22). The engine knows nothing of where records go: a process sets
//! an [`AttemptSink`] and [`Core::work`](super::Core::work) hands it one [`AttemptRecord`] per
//! settled attempt. Without a sink nothing is built, so an unobserved worker pays nothing.

use std::io::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{Action, Executed, Outcome, Source};

/// Longest error message kept (characters): a traceback-sized message stays useful, a
/// megabyte one does not fill the history.
pub const ERROR_MESSAGE_MAX: usize = 2048;
/// Longest args summary kept (characters).
pub const ARGS_SUMMARY_MAX: usize = 512;

/// Receives attempt records. Called on the job path: it must never block or await (a
/// bounded buffer that drops when full is the intended shape).
pub trait AttemptSink: Send + Sync {
    /// Takes one record.
    fn record(&self, rec: AttemptRecord);
}

/// How an attempt ended, as the history's `status` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    /// The handler returned; the result was recorded.
    Finished,
    /// It failed and another attempt is scheduled (`retry_at`).
    Retried,
    /// Out of the game for good (rq failed registry, AMQP DLQ).
    Failed,
    /// Stopped on request.
    Stopped,
    /// The shutdown grace ran out: back to its queue, no attempt spent.
    GivenBack,
    /// The execution lost its job (fencing): nothing was written for it.
    Dropped,
}

impl AttemptStatus {
    /// The `status` column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Finished => "finished",
            AttemptStatus::Retried => "retried",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Stopped => "stopped",
            AttemptStatus::GivenBack => "given_back",
            AttemptStatus::Dropped => "dropped",
        }
    }

    /// The status a settle decision gives the attempt.
    pub fn of(action: &Action) -> Self {
        match action {
            Action::Finish => AttemptStatus::Finished,
            Action::Retry { .. } => AttemptStatus::Retried,
            Action::DeadLetter(_) => AttemptStatus::Failed,
            Action::Stopped => AttemptStatus::Stopped,
            Action::GiveBack => AttemptStatus::GivenBack,
            Action::Drop => AttemptStatus::Dropped,
        }
    }
}

/// One settled attempt: a row of the history (`mindora_job_attempts`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// rq job id / AMQP task id.
    pub job_id: String,
    /// Where the job came from.
    pub source: Source,
    /// Queue it was claimed from.
    pub queue: String,
    /// Function it names (`<undecodable>` / `<malformed>` when unreadable).
    pub function: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// The worker's name (as registered in rq).
    pub worker: Arc<str>,
    /// When the job last entered its queue, if the source knows.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When the execution started (wall clock).
    pub started_at: DateTime<Utc>,
    /// When it ended (before its outcome was written).
    pub ended_at: DateTime<Utc>,
    /// `started_at - enqueued_at`, when known (never negative).
    pub wait_ms: Option<i64>,
    /// Time in the handler.
    pub run_ms: i64,
    /// Exception type of a failure.
    pub error_type: Option<String>,
    /// Its message, at most [`ERROR_MESSAGE_MAX`] characters.
    pub error_message: Option<String>,
    /// Args and kwargs as JSON, at most [`ARGS_SUMMARY_MAX`] characters.
    pub args_summary: Option<String>,
    /// When the next attempt is due (status `retried`).
    pub retry_at: Option<DateTime<Utc>>,
    /// The attempt's trace id (32 lowercase hex digits) when it was traced and sampled.
    pub trace_id: Option<String>,
}

/// A sink and the worker name it records under, as the core holds them.
#[derive(Clone)]
pub struct Observer {
    sink: Arc<dyn AttemptSink>,
    worker: Arc<str>,
}

impl Observer {
    /// Records of `worker` go to `sink`.
    pub fn new(sink: Arc<dyn AttemptSink>, worker: &str) -> Self {
        Observer {
            sink,
            worker: Arc::from(worker),
        }
    }

    /// The worker name records carry.
    pub fn worker(&self) -> &Arc<str> {
        &self.worker
    }

    /// Hands a record to the sink.
    pub fn record(&self, rec: AttemptRecord) {
        self.sink.record(rec);
    }
}

/// What the core knows of an attempt before it runs (only built when observed).
#[derive(Debug, Clone)]
pub(super) struct Started {
    pub job_id: String,
    pub source: Source,
    pub queue: String,
    pub function: String,
    pub attempt: u32,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub args_summary: Option<String>,
}

impl Started {
    /// The record of this attempt once it ended at `ended_at` and was decided.
    pub(super) fn finish(
        self,
        worker: Arc<str>,
        executed: &Executed,
        action: &Action,
        ended_at: DateTime<Utc>,
        trace_id: Option<String>,
    ) -> AttemptRecord {
        let (error_type, error_message) = match &executed.outcome {
            Outcome::Failed(err) => (
                Some(bounded(&err.kind, ERROR_MESSAGE_MAX)),
                Some(bounded(&err.message, ERROR_MESSAGE_MAX)),
            ),
            _ => (None, None),
        };
        let retry_at = match action {
            Action::Retry { delay_secs, .. } => i64::try_from(*delay_secs)
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .and_then(|d| ended_at.checked_add_signed(d)),
            _ => None,
        };
        let wait_ms = self
            .enqueued_at
            .map(|at| (self.started_at - at).num_milliseconds().max(0));
        AttemptRecord {
            job_id: self.job_id,
            source: self.source,
            queue: self.queue,
            function: self.function,
            attempt: self.attempt,
            status: AttemptStatus::of(action),
            worker,
            enqueued_at: self.enqueued_at,
            started_at: self.started_at,
            ended_at,
            wait_ms,
            run_ms: i64::try_from(executed.elapsed.as_millis()).unwrap_or(i64::MAX),
            error_type,
            error_message,
            args_summary: self.args_summary,
            retry_at,
            trace_id,
        }
    }
}

/// `s` cut to at most `max` characters.
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

/// Args and kwargs as compact JSON (`[1,"a"] {"x":2}`), at most `max` characters. The
/// serializer stops once the bound is reached, so a huge payload costs no more than `max`.
pub fn args_summary(args: &[Value], kwargs: &Map<String, Value>, max: usize) -> String {
    // Characters are at most 4 bytes: this many bytes always hold `max` characters.
    let mut out = Capped {
        buf: Vec::with_capacity(64),
        cap: max.saturating_mul(4),
    };
    let _ = serde_json::to_writer(&mut out, args);
    if !kwargs.is_empty() {
        let _ = out.write_all(b" ");
        let _ = serde_json::to_writer(&mut out, kwargs);
    }
    bounded(&String::from_utf8_lossy(&out.buf), max)
}

/// A writer that keeps the first `cap` bytes and then refuses, ending the serialization.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(std::io::Error::other("summary bound reached"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::core::DeadReason;
    use crate::handler::HandlerError;

    fn started() -> Started {
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap();
        Started {
            job_id: "j1".into(),
            source: Source::Redis,
            queue: "q".into(),
            function: "f".into(),
            attempt: 2,
            enqueued_at: Some(at - chrono::TimeDelta::milliseconds(1500)),
            started_at: at,
            args_summary: Some("[1]".into()),
        }
    }

    #[test]
    fn statuses_follow_the_decision() {
        let cases = [
            (Action::Finish, "finished"),
            (
                Action::Retry {
                    delay_secs: 5,
                    adopt: None,
                },
                "retried",
            ),
            (Action::DeadLetter(DeadReason::MaxAttempts), "failed"),
            (Action::Stopped, "stopped"),
            (Action::GiveBack, "given_back"),
            (Action::Drop, "dropped"),
        ];
        for (action, status) in cases {
            assert_eq!(AttemptStatus::of(&action).as_str(), status);
        }
    }

    #[test]
    fn a_retried_failure_has_its_error_wait_and_retry_time() {
        let s = started();
        let start = s.started_at;
        let executed = Executed {
            outcome: Outcome::Failed(HandlerError::retryable("ValueError", "x".repeat(5000))),
            elapsed: Duration::from_millis(250),
            callbacks_run: false,
        };
        let action = Action::Retry {
            delay_secs: 3,
            adopt: None,
        };
        let end = start + chrono::TimeDelta::milliseconds(250);
        let rec = s.finish(Arc::from("w"), &executed, &action, end, None);
        assert_eq!(rec.status, AttemptStatus::Retried);
        assert_eq!(rec.error_type.as_deref(), Some("ValueError"));
        assert_eq!(
            rec.error_message.as_ref().map(|m| m.chars().count()),
            Some(ERROR_MESSAGE_MAX)
        );
        assert_eq!(rec.wait_ms, Some(1500));
        assert_eq!(rec.run_ms, 250);
        assert_eq!(rec.retry_at, Some(end + chrono::TimeDelta::seconds(3)));
        assert_eq!(rec.attempt, 2);
        assert_eq!(&*rec.worker, "w");
    }

    #[test]
    fn a_wait_is_never_negative() {
        let mut s = started();
        s.enqueued_at = Some(s.started_at + chrono::TimeDelta::seconds(2));
        let executed = Executed {
            outcome: Outcome::Done(crate::handler::Output::Value(Value::Null)),
            elapsed: Duration::ZERO,
            callbacks_run: false,
        };
        let end = s.started_at;
        let rec = s.finish(Arc::from("w"), &executed, &Action::Finish, end, None);
        assert_eq!(rec.wait_ms, Some(0));
        assert_eq!(rec.error_type, None);
        assert_eq!(rec.retry_at, None);
    }

    #[test]
    fn summaries_are_bounded_on_character_boundaries() {
        let kwargs = json!({"x": 2}).as_object().cloned().unwrap_or_default();
        assert_eq!(
            args_summary(&[json!(1), json!("a")], &kwargs, 512),
            r#"[1,"a"] {"x":2}"#
        );
        assert_eq!(args_summary(&[], &Map::new(), 512), "[]");
        let big = vec![json!("é".repeat(10_000))];
        let s = args_summary(&big, &Map::new(), 512);
        assert_eq!(s.chars().count(), 512);
        assert!(s.starts_with("[\"éé"));
        assert_eq!(bounded("héllo", 2), "hé");
        assert_eq!(bounded("hé", 5), "hé");
    }
}
