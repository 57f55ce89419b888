//! The fake agent's HTTP side: one handler that routes like Consul's, validates, records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::validate::{go_duration_ms, service_registration};
use super::{CheckState, Recorded, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

type Answer = (StatusCode, Vec<(&'static str, String)>, String);

fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    (status, Vec::new(), body.into())
}

fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("X-Consul-Token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tok = token(&headers);
    let (status, extra, body) = answer(&shared, &method, &uri, tok.as_deref(), &body).await;
    {
        let mut s = shared.lock();
        if status == StatusCode::BAD_REQUEST
            || status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && body.starts_with("no such endpoint"))
        {
            s.violations.push(format!("{method} {uri}: {body}"));
        }
        s.requests.push(Recorded {
            method: method.to_string(),
            uri: uri.to_string(),
            status: status.as_u16(),
            token: tok,
        });
    }
    let mut resp = (status, body).into_response();
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

async fn answer(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    tok: Option<&str>,
    body: &[u8],
) -> Answer {
    if let Some(want) = &shared.acl_token {
        match tok {
            None => {
                return text(
                    StatusCode::FORBIDDEN,
                    "Permission denied: anonymous token lacks permission",
                )
            }
            Some(t) if t != want => return text(StatusCode::FORBIDDEN, "ACL not found"),
            Some(_) => {}
        }
    }
    let path = uri.path();
    let expect = |m: Method| -> Result<(), Answer> {
        if *method == m {
            Ok(())
        } else {
            Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            ))
        }
    };
    let result = if path == "/v1/agent/service/register" {
        expect(Method::PUT).map(|_| register(shared, uri, body))
    } else if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        expect(Method::PUT).map(|_| deregister(shared, &decode(id)))
    } else if let Some(id) = path.strip_prefix("/v1/agent/check/pass/") {
        expect(Method::PUT).map(|_| pass(shared, &decode(id)))
    } else if let Some(id) = path.strip_prefix("/v1/agent/service/") {
        expect(Method::GET).map(|_| service(shared, &decode(id)))
    } else if let Some(key) = path.strip_prefix("/v1/kv/") {
        let key = decode(key);
        match *method {
            Method::GET => Ok(kv_get(shared, &key, uri).await),
            Method::PUT => Ok(kv_write(shared, &key, uri, Some(body))),
            Method::DELETE => Ok(kv_write(shared, &key, uri, None)),
            _ => Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            )),
        }
    } else {
        Ok(text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint in the fake's contract: {path}"),
        ))
    };
    result.unwrap_or_else(|e| e)
}

fn register(shared: &Arc<Shared>, uri: &Uri, body: &[u8]) -> Answer {
    for (k, v) in query(uri) {
        let ok = match k.as_str() {
            "replace-existing-checks" => matches!(v.as_str(), "" | "true" | "false"),
            "ns" | "partition" | "token" => true,
            _ => false,
        };
        if !ok {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unsupported query parameter {k}={v}"),
            );
        }
    }
    let v = match service_registration(body) {
        Ok(v) => v,
        Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
    };
    let id = v["ID"]
        .as_str()
        .or(v["Name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut s = shared.lock();
    s.checks.retain(|_, c| c.service_id != id);
    let checks: Vec<Value> = v
        .get("Check")
        .into_iter()
        .chain(
            v.get("Checks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .cloned()
        .collect();
    for (n, c) in checks.iter().enumerate() {
        let check_id = c["CheckID"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                if checks.len() == 1 {
                    format!("service:{id}")
                } else {
                    format!("service:{id}:{}", n + 1)
                }
            });
        let ttl = c.get("TTL").and_then(Value::as_str);
        let period = ttl.or(c["Interval"].as_str()).and_then(go_duration_ms);
        s.checks.insert(
            check_id,
            CheckState {
                service_id: id.clone(),
                status: c["Status"].as_str().unwrap_or("critical").to_string(),
                http: c["HTTP"].as_str().map(str::to_string),
                period_ms: period.unwrap_or(10_000),
                ttl: ttl.is_some(),
                last_pass: None,
            },
        );
    }
    s.services.insert(id, v.clone());
    s.registrations.push(v);
    text(StatusCode::OK, "")
}

fn deregister(shared: &Arc<Shared>, id: &str) -> Answer {
    let mut s = shared.lock();
    if s.services.remove(id).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
        );
    }
    s.checks.retain(|_, c| c.service_id != id);
    s.deregistrations.push(id.to_string());
    text(StatusCode::OK, "")
}

fn pass(shared: &Arc<Shared>, check_id: &str) -> Answer {
    let mut s = shared.lock();
    match s.checks.get_mut(check_id) {
        Some(c) if c.ttl => {
            c.status = "passing".into();
            c.last_pass = Some(Instant::now());
            text(StatusCode::OK, "")
        }
        Some(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID {check_id:?} does not have associated TTL"),
        ),
        None => text(
            StatusCode::NOT_FOUND,
            format!("Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."),
        ),
    }
}

fn service(shared: &Arc<Shared>, id: &str) -> Answer {
    let s = shared.lock();
    let Some(v) = s.services.get(id) else {
        return text(StatusCode::NOT_FOUND, format!("unknown service ID: {id}"));
    };
    let out = json!({
        "ID": id,
        "Service": v["Name"],
        "Tags": v.get("Tags").cloned().unwrap_or(json!([])),
        "Meta": v.get("Meta").cloned().unwrap_or(json!({})),
        "Port": v.get("Port").cloned().unwrap_or(json!(0)),
        "Address": v.get("Address").cloned().unwrap_or(json!("")),
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": false,
        "Datacenter": "dc1",
    });
    (
        StatusCode::OK,
        vec![("content-type", "application/json".into())],
        out.to_string(),
    )
}

const KV_GET_PARAMS: &[&str] = &[
    "recurse",
    "index",
    "wait",
    "keys",
    "separator",
    "raw",
    "dc",
    "consistent",
    "stale",
    "cached",
    "ns",
    "partition",
    "token",
];

async fn kv_get(shared: &Arc<Shared>, key: &str, uri: &Uri) -> Answer {
    let q: HashMap<String, String> = query(uri).into_iter().collect();
    if let Some(k) = q.keys().find(|k| !KV_GET_PARAMS.contains(&k.as_str())) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unsupported query parameter {k:?}"),
        );
    }
    let recurse = q.contains_key("recurse");
    let index = match q.get("index").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(i)) => i,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
    };
    let wait_ms = match q.get("wait").map(|w| go_duration_ms(w)) {
        None => 300_000,
        Some(Some(ms)) => ms.min(600_000),
        Some(None) => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
    };
    if index > 0 {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut rx = shared.changed.subscribe();
        loop {
            if shared.lock().kv_index(key, recurse) > index {
                break;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    let s = shared.lock();
    let idx = s.kv_index(key, recurse);
    let entries: Vec<Value> =
        s.kv.iter()
            .filter(|(k, _)| {
                if recurse {
                    k.starts_with(key)
                } else {
                    *k == key
                }
            })
            .map(|(k, e)| {
                json!({
                    "LockIndex": 0,
                    "Key": k,
                    "Flags": 0,
                    "Value": if e.value.is_empty() { Value::Null } else {
                        Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
                    },
                    "CreateIndex": e.create_index,
                    "ModifyIndex": e.modify_index,
                })
            })
            .collect();
    let headers = vec![
        ("x-consul-index", idx.to_string()),
        ("x-consul-knownleader", "true".to_string()),
        ("x-consul-lastcontact", "0".to_string()),
    ];
    if entries.is_empty() {
        return (StatusCode::NOT_FOUND, headers, String::new());
    }
    let mut headers = headers;
    headers.push(("content-type", "application/json".into()));
    (StatusCode::OK, headers, Value::Array(entries).to_string())
}

fn kv_write(shared: &Arc<Shared>, key: &str, uri: &Uri, body: Option<&[u8]>) -> Answer {
    if let Some(k) = query(uri).iter().map(|(k, _)| k).find(|k| {
        !matches!(
            k.as_str(),
            "dc" | "flags" | "cas" | "ns" | "partition" | "token" | "recurse"
        )
    }) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unsupported query parameter {k:?}"),
        );
    }
    {
        let mut s = shared.lock();
        match body {
            Some(b) => s.put(key, b),
            None => s.delete(key),
        }
    }
    shared.notify();
    text(StatusCode::OK, "true")
}

/// Runs HTTP checks at their interval and expires TTL checks, like the agent does.
pub(crate) async fn run_checks(shared: Arc<Shared>) {
    let mut last_run: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let due: Vec<(String, String)> = {
            let mut s = shared.lock();
            let now = Instant::now();
            for c in s.checks.values_mut() {
                if c.ttl
                    && c.last_pass
                        .is_some_and(|t| now.duration_since(t).as_millis() as u64 > c.period_ms)
                {
                    c.status = "critical".into();
                }
            }
            s.checks
                .iter()
                .filter_map(|(id, c)| {
                    let url = c.http.clone()?;
                    let fresh = last_run.get(id).is_some_and(|t| {
                        (now.duration_since(*t).as_millis() as u64) < c.period_ms.max(500)
                    });
                    (!fresh).then(|| (id.clone(), url))
                })
                .collect()
        };
        for (id, url) in due {
            last_run.insert(id.clone(), Instant::now());
            let ok = probe(&url).await;
            if let Some(c) = shared.lock().checks.get_mut(&id) {
                c.status = if ok { "passing" } else { "critical" }.into();
            }
        }
    }
}

async fn probe(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(hostport).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<bool, std::io::Error>(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}
