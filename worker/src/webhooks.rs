//! rq's `Webhook`s (rq >= 2.10, `rq/webhook.py`): after a job's terminal state is persisted,
//! every webhook of the job whose `job_status` matches is sent, as rq sends it: `GET` with
//! the webhook's headers, or `POST` with rq's JSON payload (`job_id`, `func_name`, `status`,
//! `enqueued_at`, `ended_at`, and `exc_info` for `failed`) and `Content-Type:
//! application/json`, with the webhook's timeout.
//!
//! Sending never touches the job's outcome nor its slot: each request runs on its own task,
//! at most [`MAX_IN_FLIGHT`] at once per process (beyond that a webhook is dropped and
//! counted, so a dead endpoint cannot pile up tasks). Failures are logged and counted in
//! [`WEBHOOKS_TOTAL`] by `outcome` (`sent`, `http_error`, `failed`, `timeout`, `invalid`,
//! `dropped`), never raised, as rq logs and swallows them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use mindora_sdk::wire::job::field;
use mindora_sdk::wire::JobHash;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tracing::{debug, warn, Instrument};

/// Counter: webhook requests by `outcome`.
pub const WEBHOOKS_TOTAL: &str = "mindora_webhooks_total";
/// Webhook requests in flight per process at most.
pub const MAX_IN_FLIGHT: usize = 256;

/// One webhook as rq's `Webhook.to_dict` stores it in the job's `webhooks` field.
#[derive(Debug, Clone, Deserialize)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// `finished` or `failed`.
    pub job_status: String,
    /// `GET` (rq's default) or `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    /// Seconds (rq's default 10).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout() -> u64 {
    10
}

/// The terminal state a webhook fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// The job returned (also when a `Repeat` queues its next run, as rq).
    Finished,
    /// The job failed for good (not retried, not stopped).
    Failed,
}

impl Terminal {
    fn as_str(self) -> &'static str {
        match self {
            Terminal::Finished => "finished",
            Terminal::Failed => "failed",
        }
    }
}

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));

static CLIENT: LazyLock<Option<reqwest::Client>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| warn!(error = %e, "cannot build the webhook HTTP client; webhooks are off"))
        .ok()
});

/// The webhooks stored on a job (empty when it has none; unreadable JSON is logged).
pub fn of_job(hash: &JobHash) -> Vec<Webhook> {
    let Some(raw) = hash.text(field::WEBHOOKS).filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<Webhook>>(raw) {
        Ok(list) => list,
        Err(e) => {
            warn!(job_id = %hash.id, error = %e, "job has unreadable webhooks; none sent");
            metrics::counter!(WEBHOOKS_TOTAL, "outcome" => "invalid").increment(1);
            Vec::new()
        }
    }
}

/// rq's `Webhook.get_payload`.
pub fn payload(
    hash: &JobHash,
    function: &str,
    status: Terminal,
    ended: DateTime<Utc>,
    exc: Option<&str>,
) -> Value {
    let mut p = json!({
        "job_id": hash.id,
        "func_name": function,
        "status": status.as_str(),
        "enqueued_at": hash.enqueued_at().map(py_isoformat),
        "ended_at": py_isoformat(ended),
    });
    if status == Terminal::Failed {
        p["exc_info"] = exc.map_or(Value::Null, |e| Value::String(e.to_string()));
    }
    p
}

/// Python's `datetime.isoformat()` of an aware UTC time (microseconds omitted when zero).
fn py_isoformat(t: DateTime<Utc>) -> String {
    let s = if t.nanosecond() / 1000 == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, false)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, false)
    };
    s.replace('Z', "+00:00")
}

/// Sends, in the background, every webhook of the job that matches `status`. Returns at
/// once; call it only after the outcome is persisted.
pub fn dispatch(hash: &JobHash, status: Terminal, ended: DateTime<Utc>, exc: Option<&str>) {
    let hooks: Vec<Webhook> = of_job(hash)
        .into_iter()
        .filter(|w| w.job_status == status.as_str())
        .collect();
    if hooks.is_empty() {
        return;
    }
    let function = hash
        .call()
        .map(|(_, c)| c.function)
        .unwrap_or_else(|_| String::new());
    let body = payload(hash, &function, status, ended, exc);
    for hook in hooks {
        let Ok(permit) = SLOTS.clone().try_acquire_owned() else {
            warn!(job_id = %hash.id, url = %hook.url, "too many webhooks in flight; dropped");
            metrics::counter!(WEBHOOKS_TOTAL, "outcome" => "dropped").increment(1);
            continue;
        };
        let job_id = hash.id.clone();
        let body = body.clone();
        // A CLIENT span under the job's attempt (settling runs in it); the request carries
        // its `traceparent`, so the receiving service continues the job's trace.
        let span = tracing::info_span!(
            "webhook",
            otel.name = %hook.method,
            otel.kind = "client",
            http.request.method = %hook.method,
            url.full = %redacted(&hook.url),
            mindora.webhook.status = status.as_str(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        tokio::spawn(async move {
            let outcome = send(&hook, &body).instrument(span.clone()).await;
            if let Err((_, why)) = &outcome {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", why.as_str());
            }
            drop(permit);
            match &outcome {
                Ok(()) => debug!(job_id, url = %hook.url, "webhook sent"),
                Err((_, why)) => {
                    warn!(job_id, url = %hook.url, error = %why, "failed to send webhook")
                }
            }
            let label: &'static str = match &outcome {
                Ok(()) => "sent",
                Err((kind, _)) => kind,
            };
            metrics::counter!(WEBHOOKS_TOTAL, "outcome" => label).increment(1);
        });
    }
}

/// The URL without user info, query or fragment (they may hold secrets), for spans.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid>".into(),
    }
}

/// One request; the error says which `outcome` it counts as, and why.
async fn send(hook: &Webhook, body: &Value) -> Result<(), (&'static str, String)> {
    let url = reqwest::Url::parse(&hook.url).map_err(|e| ("invalid", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(("invalid", format!("not an http(s) URL: {}", hook.url)));
    }
    let client = CLIENT
        .as_ref()
        .ok_or(("failed", "no HTTP client".to_string()))?;
    let mut req = match hook.method.as_str() {
        "GET" => client.get(url),
        "POST" => client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string()),
        other => return Err(("invalid", format!("unsupported method {other}"))),
    };
    for (k, v) in mindora_sdk::trace::current() {
        req = req.header(k, v);
    }
    for (k, v) in hook.headers.iter().flatten() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        req = req.header(k.as_str(), v);
    }
    let resp = req
        .timeout(Duration::from_secs(hook.timeout.max(1)))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                ("timeout", e.to_string())
            } else {
                ("failed", e.to_string())
            }
        })?;
    tracing::Span::current().record("http.response.status_code", resp.status().as_u16());
    // urllib's urlopen raises on 4xx/5xx, so rq logs those as failures too.
    if resp.status().is_client_error() || resp.status().is_server_error() {
        return Err(("http_error", format!("HTTP {}", resp.status())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_matches_python() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T17:20:00.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(
            t.map(py_isoformat).as_deref(),
            Some("2026-11-30T17:20:00.123456+00:00")
        );
        let whole = DateTime::parse_from_rfc3339("2026-11-30T17:20:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(
            whole.map(py_isoformat).as_deref(),
            Some("2026-11-30T17:20:00+00:00")
        );
    }
}
