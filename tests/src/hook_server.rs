//! A local HTTP server that records every request it gets (method, path, headers, body),
//! for webhook tests. Paths starting with `/slow` answer after 10 s; the record says when
//! the answer went out, so a test can tell a held-up worker from a free one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// The body as text.
    pub body: String,
    /// Whether the answer has been sent (false while a `/slow` request is held).
    pub answered: bool,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// The running server; stopped on drop.
pub struct HookServer {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Log,
    _rt: tokio::runtime::Runtime,
}

impl HookServer {
    /// Starts on a free loopback port.
    pub fn start() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let log: Log = Arc::default();
        let app = Router::new().fallback(record).with_state(log.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the hook server")?;
        let addr = listener.local_addr()?;
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HookServer { addr, log, _rt: rt })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn record(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.to_string());
    let slow = path.starts_with("/slow");
    let index = {
        let Ok(mut l) = log.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        l.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            answered: !slow,
        });
        l.len() - 1
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Ok(mut l) = log.lock() {
            l[index].answered = true;
        }
    }
    if path.starts_with("/status500") {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

/// A loopback URL where nothing listens (a dead endpoint).
pub fn dead_url() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(format!("http://{addr}/dead"))
}
