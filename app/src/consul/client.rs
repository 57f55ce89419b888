//! A small typed client for the parts of Consul's HTTP API the worker uses: agent service
//! registration, TTL check updates and KV reads with blocking queries.
//!
//! Why not a crate: the maintained Rust client (`rs-consul`) registers through the catalog
//! endpoints, not the agent's (no agent-side health checks, no
//! `DeregisterCriticalServiceAfter`), and the other crates are unmaintained. Four endpoints
//! over `reqwest` (already built for the pipelines) are less code than adapting either.

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tracing::Instrument;

use super::registration::ServiceRegistration;

/// Errors talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// Consul could not be reached or did not answer in time.
    #[error("Consul at {addr} unreachable: {source}")]
    Unreachable {
        /// Agent address.
        addr: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The ACL token was missing, unknown or lacks a permission.
    #[error("Consul refused the request (ACL, HTTP {status}): {body}; set CONSUL_HTTP_TOKEN or --consul-token-file")]
    Denied {
        /// HTTP status (403 or 401).
        status: u16,
        /// Consul's reason.
        body: String,
    },
    /// Consul answered with an unexpected status.
    #[error("Consul answered HTTP {status} to {what}: {body}")]
    Status {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Consul's reason.
        body: String,
    },
    /// The answer did not have the documented shape.
    #[error("Consul answer to {what} is malformed: {reason}")]
    Malformed {
        /// What was asked.
        what: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The agent address is not a URL.
    #[error("invalid Consul address {0:?}: expected host:port or http(s)://host:port")]
    Address(String),
}

impl ConsulError {
    /// Transport failures (Consul away or restarting), as opposed to answers.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConsulError::Unreachable { .. })
    }
}

/// One KV pair, as `/v1/kv/<prefix>?recurse` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Full key.
    pub key: String,
    /// Decoded value (empty for a key stored without one).
    pub value: Vec<u8>,
    /// Raft index of the last write.
    pub modify_index: u64,
}

/// A KV listing and the index to block on for the next change.
#[derive(Debug, Clone)]
pub struct KvListing {
    /// `X-Consul-Index` of the answer.
    pub index: u64,
    /// Keys under the prefix (none when Consul answered 404).
    pub pairs: Vec<KvPair>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

/// Consul agent client. Cheap to clone.
#[derive(Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Timeout of the non-blocking calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl ConsulClient {
    /// A client for the agent at `addr` (`host:port` or a URL), sending `token` if set.
    pub fn new(addr: &str, token: Option<String>) -> Result<Self, ConsulError> {
        let addr = addr.trim().trim_end_matches('/');
        let base = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let parsed =
            reqwest::Url::parse(&base).map_err(|_| ConsulError::Address(addr.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConsulError::Address(addr.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|source| ConsulError::Unreachable {
                addr: base.clone(),
                source,
            })?;
        Ok(ConsulClient {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// The agent's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.header("X-Consul-Token", t),
            None => rb,
        }
    }

    async fn send(&self, what: &str, rb: RequestBuilder) -> Result<reqwest::Response, ConsulError> {
        // A CLIENT span per agent call (with tracing on), its context in the request.
        let span = tracing::info_span!(
            "consul",
            otel.name = %format!("consul {what}"),
            otel.kind = "client",
            server.address = %self.base,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut rb = rb;
        for (k, v) in span.in_scope(mindora_sdk::trace::current) {
            rb = rb.header(k, v);
        }
        let resp = rb.send().instrument(span.clone()).await.map_err(|source| {
            span.record("otel.status_code", "ERROR");
            ConsulError::Unreachable {
                addr: self.base.clone(),
                source,
            }
        })?;
        let status = resp.status();
        span.record("http.response.status_code", status.as_u16());
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            span.record("otel.status_code", "ERROR");
        }
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let body = body.trim().chars().take(300).collect::<String>();
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            return Err(ConsulError::Denied {
                status: status.as_u16(),
                body,
            });
        }
        Err(ConsulError::Status {
            what: what.to_string(),
            status: status.as_u16(),
            body,
        })
    }

    fn not_found(what: &str, resp: &reqwest::Response) -> ConsulError {
        ConsulError::Status {
            what: what.to_string(),
            status: resp.status().as_u16(),
            body: "not found".into(),
        }
    }

    /// `PUT /v1/agent/service/register?replace-existing-checks=true`.
    pub async fn register(&self, service: &ServiceRegistration) -> Result<(), ConsulError> {
        let what = "service registration";
        let rb = self
            .request(Method::PUT, "/v1/agent/service/register")
            .query(&[("replace-existing-checks", "true")])
            .timeout(CALL_TIMEOUT)
            .json(service);
        let resp = self.send(what, rb).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Self::not_found(what, &resp));
        }
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/:id`.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let what = "service deregistration";
        let path = format!("/v1/agent/service/deregister/{}", encode(service_id));
        let resp = self
            .send(what, self.request(Method::PUT, &path).timeout(CALL_TIMEOUT))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Self::not_found(what, &resp));
        }
        Ok(())
    }

    /// `GET /v1/agent/service/:id`: whether the agent still knows the service.
    pub async fn service_known(&self, service_id: &str) -> Result<bool, ConsulError> {
        let path = format!("/v1/agent/service/{}", encode(service_id));
        let resp = self
            .send(
                "service lookup",
                self.request(Method::GET, &path).timeout(CALL_TIMEOUT),
            )
            .await?;
        Ok(resp.status() != StatusCode::NOT_FOUND)
    }

    /// `PUT /v1/agent/check/pass/:check_id`: keeps a TTL check passing.
    pub async fn pass_check(&self, check_id: &str) -> Result<(), ConsulError> {
        let what = "TTL check update";
        let path = format!("/v1/agent/check/pass/{}", encode(check_id));
        let resp = self
            .send(what, self.request(Method::PUT, &path).timeout(CALL_TIMEOUT))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Self::not_found(what, &resp));
        }
        Ok(())
    }

    /// `GET /v1/kv/<prefix>?recurse[&index=N&wait=Ws]`: the keys under `prefix`. With an
    /// `index` above 0 Consul holds the answer until something under the prefix changes or
    /// `wait` passes (plus up to wait/16 of jitter Consul adds).
    pub async fn kv_list(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
    ) -> Result<KvListing, ConsulError> {
        let what = format!("KV listing of {prefix:?}");
        let path = format!("/v1/kv/{}", encode_key(prefix));
        let mut rb = self
            .request(Method::GET, &path)
            .query(&[("recurse", "true")]);
        let timeout = if index > 0 {
            let secs = wait.as_secs().max(1);
            rb = rb.query(&[("index", index.to_string()), ("wait", format!("{secs}s"))]);
            Duration::from_secs(secs + secs / 16 + 5)
        } else {
            CALL_TIMEOUT
        };
        let resp = self.send(&what, rb.timeout(timeout)).await?;
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ConsulError::Malformed {
                what: what.clone(),
                reason: "no numeric X-Consul-Index header".into(),
            })?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(KvListing {
                index,
                pairs: Vec::new(),
            });
        }
        let raw: Vec<RawPair> = resp.json().await.map_err(|e| ConsulError::Malformed {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let mut pairs = Vec::with_capacity(raw.len());
        for p in raw {
            let value = match p.value {
                None => Vec::new(),
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| ConsulError::Malformed {
                        what: what.clone(),
                        reason: format!("value of {:?} is not base64: {e}", p.key),
                    })?,
            };
            pairs.push(KvPair {
                key: p.key,
                value,
                modify_index: p.modify_index,
            });
        }
        Ok(KvListing { index, pairs })
    }
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a KV key, keeping its `/` separators.
fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_encoding() {
        assert_eq!(
            ConsulClient::new("consul:8500", None)
                .expect("valid")
                .base(),
            "http://consul:8500"
        );
        assert_eq!(
            ConsulClient::new("https://c.example:8501/", None)
                .expect("valid")
                .base(),
            "https://c.example:8501"
        );
        assert!(ConsulClient::new("ftp://x", None).is_err());
        assert_eq!(encode_key("mindora/dev/worker/"), "mindora/dev/worker/");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
