//! `mindora-worker healthcheck`: a one-shot probe of a running worker's `/healthz`, for
//! container health checks (the image has no curl). Uses reqwest, the HTTP client the
//! worker already carries for webhooks and Consul, with a timeout so a hung worker fails
//! the check instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

/// How long the whole probe (connect, request, response) may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a worker is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer: nothing listens, the connection failed, or the timeout passed.
    #[error("GET {url}: {source}")]
    Request {
        /// The probed URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// An answer other than 200.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The probed URL.
        url: String,
        /// What the worker answered.
        status: reqwest::StatusCode,
    },
}

/// GETs `path` on the worker's metrics address (a wildcard bind address is probed on
/// loopback); `Ok` on a 200 within `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let target = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    let url = format!("http://{target}{path}");
    let request = |source| ProbeError::Request {
        url: url.clone(),
        source,
    };
    // No proxy: the worker is local, and a proxy from the environment must not answer
    // for it.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(request)?;
    let response = client.get(&url).send().await.map_err(request)?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        Ok(())
    } else {
        Err(ProbeError::Status { url, status })
    }
}
