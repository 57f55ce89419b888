//! What the routes talk to: the Redis connection, the history (optional) and RabbitMQ
//! (optional), plus the audit trail every action goes through.

use mindora_sdk::RedisConn;
use serde_json::Value;

use super::session::Session;
use crate::data::history::History;
use crate::data::{DataError, HistoryState};

/// The console's connections (cheap to clone).
#[derive(Clone)]
pub struct Backend {
    pub redis: RedisConn,
    pub history: Option<History>,
    /// RabbitMQ URL and the work queues whose dead-letter queues (`Q.dlq`) the DLQ page shows.
    pub amqp: Option<(String, Vec<String>)>,
}

impl Backend {
    pub async fn history_state(&self) -> HistoryState {
        match &self.history {
            None => HistoryState::Off,
            Some(h) => h.state().await,
        }
    }

    pub fn history(&self) -> Result<&History, DataError> {
        self.history.as_ref().ok_or(DataError::HistoryOff)
    }

    /// The history when `state` says it answers: a page skips its history queries when the
    /// database is away instead of waiting for each one to time out.
    pub fn usable(&self, state: &HistoryState) -> Option<&History> {
        match state {
            HistoryState::On { .. } => self.history.as_ref(),
            _ => None,
        }
    }

    /// Logs an action and, when the history is on, records it (who, what, on how many
    /// jobs). A failed audit write is logged and said on the page; it does not undo the
    /// action, which already happened.
    pub async fn audit(
        &self,
        s: &Session,
        action: &str,
        target: &str,
        jobs: u64,
        detail: Option<Value>,
    ) -> Result<(), String> {
        let detail_text = detail.as_ref().map(|d| d.to_string()).unwrap_or_default();
        tracing::info!(
            user = %s.user,
            role = s.role.as_str(),
            action,
            target,
            jobs,
            detail = %detail_text,
            "console action"
        );
        let Some(h) = &self.history else {
            return Ok(());
        };
        let jobs = i32::try_from(jobs).unwrap_or(i32::MAX);
        h.record_action(&s.user, s.role.as_str(), action, target, jobs, detail)
            .await
            .map_err(|e| {
                tracing::error!(user = %s.user, action, target, "audit row not written: {e}");
                format!("the action was done but its audit row was not written: {e}")
            })
    }
}
