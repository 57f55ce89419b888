//! rq's newer per-job options for [`crate::Client::enqueue`], written into the job hash
//! byte for byte as Python rq writes them (`Queue.enqueue(..., rate_limit=, repeat=,
//! webhooks=)`), so a job enqueued from Rust behaves the same under `rq worker` and
//! `mindora-worker`:
//!
//! - [`RateLimit`] (rq 3.0): `rate_limit_key`, `rate_limit_concurrency`; the job goes through
//!   rq 3.0's limiter (`rq:rl:<key>` sets) at enqueue, as `Queue._enqueue_rate_limited_job`.
//! - [`Repeat`] (rq >= 2.3): `repeats_left` = times, `repeat_intervals` = JSON list. The job
//!   runs once, then `times` more times after successful runs.
//! - [`Webhook`] (rq >= 2.10): `webhooks` = JSON list of `Webhook.to_dict()`.
//!
//! JSON is written as Python's `json.dumps` writes it (`", "` / `": "` separators, non-ASCII
//! as `\uXXXX`), so the bytes match what rq stores.

use serde::Serialize;
use serde_json::ser::Formatter;

use crate::error::SdkError;

/// rq 3.0 `RateLimit(key, concurrency)`: at most `concurrency` jobs of `key` queued or
/// running at once, across Python rq 3.0 workers and ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Groups the jobs that share the limit.
    pub key: String,
    /// Jobs of the key allowed at once (at least 1).
    pub concurrency: u32,
}

/// rq `Repeat(times, interval)`: after each successful run the job is queued again (at
/// once, or after the interval), `times` more times. Interval `i` is used for repeat `i`;
/// the last one is reused when the list is shorter (rq's `Repeat.get_interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// Runs after the first one (at least 1).
    pub times: u32,
    /// Seconds before each repeat (rq's default: `[0]`, at once).
    pub intervals: Vec<u64>,
}

impl Repeat {
    /// `times` more runs, each right after the previous one.
    pub fn new(times: u32) -> Self {
        Repeat {
            times,
            intervals: vec![0],
        }
    }

    /// `times` more runs, spaced by `intervals` (seconds; the last one is reused).
    pub fn with_intervals(times: u32, intervals: Vec<u64>) -> Self {
        Repeat { times, intervals }
    }
}

/// Which terminal state a [`Webhook`] fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStatus {
    /// The job returned.
    Finished,
    /// The job failed for good.
    Failed,
}

/// The request method of a [`Webhook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookMethod {
    /// `GET` without a body (rq's default).
    #[default]
    Get,
    /// `POST` with rq's JSON payload.
    Post,
}

/// rq `Webhook(url, job_status, method=, headers=, timeout=)`: an HTTP request the worker
/// sends when the job reaches `job_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// When to send it.
    pub job_status: WebhookStatus,
    /// `GET` or `POST`.
    pub method: WebhookMethod,
    /// Extra request headers, in order (`None`: rq's `headers=None`).
    pub headers: Option<Vec<(String, String)>>,
    /// Seconds (rq's default 10).
    pub timeout_secs: u32,
}

impl Webhook {
    /// A `GET` webhook with rq's defaults (no headers, 10 s).
    pub fn new(url: impl Into<String>, job_status: WebhookStatus) -> Self {
        Webhook {
            url: url.into(),
            job_status,
            method: WebhookMethod::Get,
            headers: None,
            timeout_secs: 10,
        }
    }

    /// rq's `Webhook.to_dict()`, keys in its order.
    fn to_dict(&self) -> WebhookDict<'_> {
        WebhookDict {
            url: &self.url,
            job_status: match self.job_status {
                WebhookStatus::Finished => "finished",
                WebhookStatus::Failed => "failed",
            },
            method: match self.method {
                WebhookMethod::Get => "GET",
                WebhookMethod::Post => "POST",
            },
            headers: self.headers.as_deref().map(Headers),
            timeout: self.timeout_secs,
        }
    }

    /// rq's checks in `Webhook.__init__`.
    fn validate(&self) -> Result<(), SdkError> {
        let ok_scheme = ["http://", "https://"].iter().find_map(|s| {
            self.url
                .get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|_| &self.url[s.len()..])
        });
        match ok_scheme {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => {
                return Err(SdkError::InvalidOptions(format!(
                    "webhook url must be an http:// or https:// URL, got {:?}",
                    self.url
                )))
            }
        }
        if self.timeout_secs == 0 {
            return Err(SdkError::InvalidOptions(
                "webhook timeout must be a positive integer".into(),
            ));
        }
        Ok(())
    }
}

/// `Webhook.to_dict()`: a struct, so the keys keep rq's order.
#[derive(Serialize)]
struct WebhookDict<'a> {
    url: &'a str,
    job_status: &'static str,
    method: &'static str,
    headers: Option<Headers<'a>>,
    timeout: u32,
}

/// Headers as a JSON object, in the order given.
struct Headers<'a>(&'a [(String, String)]);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Checks the options as rq does and returns the job-hash fields they add.
pub(crate) fn fields(
    rate_limit: Option<&RateLimit>,
    repeat: Option<&Repeat>,
    webhooks: &[Webhook],
) -> Result<Vec<(&'static str, Vec<u8>)>, SdkError> {
    let mut f: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if let Some(r) = repeat {
        if r.times < 1 {
            return Err(SdkError::InvalidOptions(
                "repeat times: please enter a value greater than 0".into(),
            ));
        }
        f.push(("repeats_left", r.times.to_string().into_bytes()));
        f.push(("repeat_intervals", py_json(&r.intervals)?));
    }
    if let Some(rl) = rate_limit {
        if rl.key.is_empty() {
            return Err(SdkError::InvalidOptions(
                "rate limit key must not be empty".into(),
            ));
        }
        if rl.concurrency < 1 {
            return Err(SdkError::InvalidOptions(
                "rate limit concurrency must be at least 1".into(),
            ));
        }
        f.push(("rate_limit_key", rl.key.clone().into_bytes()));
        f.push((
            "rate_limit_concurrency",
            rl.concurrency.to_string().into_bytes(),
        ));
    }
    if !webhooks.is_empty() {
        for w in webhooks {
            w.validate()?;
        }
        let list: Vec<WebhookDict<'_>> = webhooks.iter().map(Webhook::to_dict).collect();
        f.push(("webhooks", py_json(&list)?));
    }
    Ok(f)
}

/// `json.dumps(value)` as Python writes it.
pub fn py_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, SdkError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| SdkError::InvalidOptions(format!("cannot encode as JSON: {e}")))?;
    Ok(out)
}

/// Python's default `json.dumps` layout: `", "` and `": "`, `ensure_ascii=True`.
struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_laid_out_as_python_dumps_it() {
        let v = serde_json::json!([1, 2, {"a": "é😀", "b": null}]);
        assert_eq!(
            String::from_utf8(py_json(&v).expect("json")).expect("utf8"),
            r#"[1, 2, {"a": "\u00e9\ud83d\ude00", "b": null}]"#
        );
    }

    #[test]
    fn fields_match_rq_and_bad_options_are_refused() {
        let mut hook = Webhook::new("http://127.0.0.1:9/h", WebhookStatus::Failed);
        hook.method = WebhookMethod::Post;
        hook.headers = Some(vec![("X-Token".into(), "t".into())]);
        let f = fields(
            Some(&RateLimit {
                key: "k".into(),
                concurrency: 2,
            }),
            Some(&Repeat::with_intervals(3, vec![1, 2])),
            &[hook],
        )
        .expect("valid");
        let text: Vec<(&str, String)> = f
            .iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(
            text,
            vec![
                ("repeats_left", "3".into()),
                ("repeat_intervals", "[1, 2]".into()),
                ("rate_limit_key", "k".into()),
                ("rate_limit_concurrency", "2".into()),
                (
                    "webhooks",
                    r#"[{"url": "http://127.0.0.1:9/h", "job_status": "failed", "method": "POST", "headers": {"X-Token": "t"}, "timeout": 10}]"#
                        .into()
                ),
            ]
        );
        let bad = |rl: Option<RateLimit>, rep: Option<Repeat>, w: Vec<Webhook>| {
            fields(rl.as_ref(), rep.as_ref(), &w)
                .expect_err("refused")
                .to_string()
        };
        assert!(bad(None, Some(Repeat::new(0)), vec![]).contains("greater than 0"));
        let rl = RateLimit {
            key: String::new(),
            concurrency: 1,
        };
        assert!(bad(Some(rl), None, vec![]).contains("key"));
        let ftp = Webhook::new("ftp://x/y", WebhookStatus::Finished);
        assert!(bad(None, None, vec![ftp]).contains("http"));
        let nohost = Webhook::new("http:///y", WebhookStatus::Finished);
        assert!(bad(None, None, vec![nohost]).contains("http"));
    }
}
