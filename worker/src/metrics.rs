//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//!
//! Metric names are a contract with `infra/` (alert rules, Grafana dashboards); a test
//! checks the dashboards against what this module really exports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counter: executions started.
pub const JOBS_STARTED: &str = "mindora_jobs_started_total";
/// Counter: executions that returned.
pub const JOBS_FINISHED: &str = "mindora_jobs_finished_total";
/// Counter: executions that raised, timed out or were stopped (retried or not).
pub const JOBS_FAILED: &str = "mindora_jobs_failed_total";
/// Counter: failures that were given another attempt.
pub const JOBS_RETRIED: &str = "mindora_jobs_retried_total";
/// Counter: jobs out of attempts, now in the failed registry / DLQ.
pub const JOBS_DEAD_LETTERED: &str = "mindora_jobs_dead_lettered_total";
/// Histogram: execution time in seconds.
pub const JOB_DURATION: &str = "mindora_job_duration_seconds";
/// Gauge: executions running in this process.
pub const JOBS_IN_FLIGHT: &str = "mindora_jobs_in_flight";
/// Gauge: jobs waiting per queue (lane).
pub const QUEUE_DEPTH: &str = "mindora_queue_depth";
/// Gauge: age of the oldest waiting job per queue.
pub const QUEUE_OLDEST_AGE: &str = "mindora_queue_oldest_job_age_seconds";
/// Gauge (1): worker identity.
pub const WORKER_INFO: &str = "mindora_worker_info";
/// Gauge: configured concurrency.
pub const WORKER_CONCURRENCY: &str = "mindora_worker_concurrency";
/// Counter: recoveries after the Redis connection failed.
pub const REDIS_RECONNECTS: &str = "mindora_redis_reconnects_total";

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Liveness and readiness, shared with the loops that know.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the worker registered and its loops run.
    pub started: AtomicBool,
    /// Set when shutting down (ready turns false so traffic drains).
    pub stopping: AtomicBool,
    /// Unix seconds of the last successful Redis round trip.
    pub last_redis_ok: AtomicI64,
}

impl Health {
    /// Records a successful Redis round trip.
    pub fn redis_ok(&self) {
        self.last_redis_ok
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    fn ready(&self) -> bool {
        let fresh =
            chrono::Utc::now().timestamp() - self.last_redis_ok.load(Ordering::Relaxed) < 30;
        self.started.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed) && fresh
    }
}

/// Errors setting metrics up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be built or installed.
    #[error("metrics recorder: {0}")]
    Build(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Installs the global recorder (once per process).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), DURATION_BUCKETS)
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Build(e.to_string()))
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> Result<(), MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let _ = respond(stream, &handle, &health).await;
            });
        }
    });
    Ok(())
}

async fn respond(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    health: &Health,
) -> std::io::Result<()> {
    // Read the whole request head: a client may send it in several segments.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timeout"))??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request = String::from_utf8_lossy(&buf);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" if health.ready() => ("200 OK", "text/plain", "ready\n".to_string()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `mindora-worker healthcheck`: GET /healthz on the metrics address; true when 200.
pub async fn probe(addr: SocketAddr, path: &str) -> bool {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let attempt = async {
        let mut s = TcpStream::connect(target).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<bool, std::io::Error>(out.starts_with("HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Ok(true))
    )
}
