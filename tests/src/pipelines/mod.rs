//! Test harness: a real S3 server (s3s-fs), and local servers speaking the real wire formats of
//! the OpenAI API, Elasticsearch and Qdrant (gRPC), each checking every request it receives.
#![allow(dead_code)]

pub mod fakes;
pub mod fixtures;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Request, Response};
use mindora_pipelines::{PipelineConfig, ProgressSink};
use serde_json::{Map, Value};

/// A name unique to this test run, valid as an app name, queue name and bucket name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";
pub const S3_KEY: &str = "mindora-test";
pub const S3_SECRET: &str = "mindora-test-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Path of the s3s-fs binary: PATH, then ~/.cargo/bin. Missing is a test failure (run
/// pipelines/tests/setup.sh), never a skip.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("s3s-fs");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cargo/bin/s3s-fs");
    assert!(
        p.is_file(),
        "s3s-fs not found on PATH or in ~/.cargo/bin: run pipelines/tests/setup.sh"
    );
    p
}

/// A real S3-protocol server (s3s-fs) on a free loopback port over a temp dir.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl S3Server {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        S3Server {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn configure(&self, c: &mut PipelineConfig) {
        c.s3_endpoint = Some(self.endpoint.clone());
        c.s3_access_key = Some(S3_KEY.into());
        c.s3_secret_key = Some(S3_SECRET.into());
        c.s3_force_path_style = true;
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        let mut c = PipelineConfig::default();
        self.configure(&mut c);
        mindora_pipelines::fetch::S3Source::from_config(&c)
            .expect("s3 config")
            .client()
            .clone()
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let client = self.client();
        let _ = client.create_bucket().bucket(bucket).send().await;
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put object");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as the fake servers see it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A response, with optional HTTP/2 trailers (gRPC status).
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub trailers: Option<Vec<(String, String)>>,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Self {
        Resp {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(v.to_string()),
            trailers: None,
        }
    }
}

type Handler = Arc<dyn Fn(Req) -> Resp + Send + Sync>;

/// Serves `handler` over HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak) on a free
/// loopback port until the runtime ends.
pub async fn serve(handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let r = Req {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().unwrap_or("").to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let out = handler(r);
                        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                            vec![Ok(Frame::data(out.body))];
                        if let Some(t) = out.trailers {
                            let mut map = HeaderMap::new();
                            for (k, v) in t {
                                map.insert(
                                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            frames.push(Ok(Frame::trailers(map)));
                        }
                        let mut resp =
                            Response::new(StreamBody::new(futures::stream::iter(frames)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(out.status).unwrap();
                        for (k, v) in out.headers {
                            resp.headers_mut().insert(
                                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

/// Collects progress reports.
#[derive(Default)]
pub struct Progress(pub Mutex<Vec<Map<String, Value>>>);

impl ProgressSink for Progress {
    fn report(&self, meta: Map<String, Value>) {
        self.0.lock().unwrap().push(meta);
    }
}

impl Progress {
    pub fn stages(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self.0.lock().unwrap().iter() {
            if let Some(s) = m.get("stage").and_then(Value::as_str) {
                if out.last().map(String::as_str) != Some(s) {
                    out.push(s.to_string());
                }
            }
        }
        out
    }
}

/// Test job identity.
pub fn job(queue: &str) -> mindora_pipelines::JobInfo {
    mindora_pipelines::JobInfo {
        id: uuid::Uuid::new_v4().to_string(),
        queue: queue.into(),
        source: "redis".into(),
    }
}

/// kwargs from a JSON object literal.
pub fn kwargs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("kwargs must be an object"),
    }
}

/// Drop guard removing what a test created on the shared real services: the PostgreSQL
/// schemas of its apps and its RabbitMQ queues. It runs on success and when the test panics
/// (during unwinding), from its own thread and runtime so it works inside the test's runtime.
/// Create it right after choosing the names, before anything is created:
/// `let _cleanup = common::cleanup(&app, &queue);`
#[must_use = "the guard cleans up when dropped; bind it to a named variable (`_cleanup`)"]
#[derive(Default)]
pub struct Cleanup {
    schemas: Vec<String>,
    queues: Vec<String>,
}

/// The guard for one test app (its schema `mindora_<app>`) and one notification queue.
pub fn cleanup(app: &str, queue: &str) -> Cleanup {
    Cleanup::default().app(app).queue(queue)
}

impl Cleanup {
    /// Also drop this app's schema (`mindora_` + name, `-` as `_`, as the record stage names it).
    pub fn app(mut self, app: &str) -> Self {
        self.schemas
            .push(format!("mindora_{}", app.replace('-', "_")));
        self
    }

    /// Also delete this RabbitMQ queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queues.push(queue.to_string());
        self
    }

    /// Drops the schemas and deletes the queues; the errors, if any.
    async fn run(schemas: &[String], queues: &[String]) -> Vec<String> {
        use sqlx::Connection;
        let mut errors = Vec::new();
        if !schemas.is_empty() {
            match sqlx::PgConnection::connect(PG_URL).await {
                Ok(mut conn) => {
                    // Never wait forever on a lock a straggling task still holds.
                    let _ = sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut conn)
                        .await;
                    for s in schemas {
                        let sql = format!(
                            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                            s.replace('"', "\"\"")
                        );
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await
                        {
                            errors.push(format!("drop schema {s}: {e}"));
                        }
                    }
                    let _ = conn.close().await;
                }
                Err(e) => errors.push(format!("connect to PostgreSQL: {e}")),
            }
        }
        if !queues.is_empty() {
            match lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await
            {
                Ok(conn) => {
                    for q in queues {
                        // A channel per queue: an error closes the channel it happened on.
                        let res = match conn.create_channel().await {
                            Ok(ch) => ch
                                .queue_delete(q.as_str().into(), Default::default())
                                .await
                                .map(drop),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = res {
                            errors.push(format!("delete queue {q}: {e}"));
                        }
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
                Err(e) => errors.push(format!("connect to RabbitMQ: {e}")),
            }
        }
        errors
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut self.schemas);
        let queues = std::mem::take(&mut self.queues);
        if schemas.is_empty() && queues.is_empty() {
            return;
        }
        let what = format!("schemas {schemas:?}, queues {queues:?}");
        // Own thread and runtime: Drop runs inside the test's runtime, where blocking on a
        // future is not allowed.
        let errors = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), Cleanup::run(&schemas, &queues))
                    .await
                    .unwrap_or_else(|_| vec!["timed out after 30 s".to_string()])
            })
        })
        .join()
        .unwrap_or_else(|_| vec!["cleanup thread panicked".to_string()]);
        if errors.is_empty() {
            return;
        }
        let msg = format!("test cleanup of {what} failed: {}", errors.join("; "));
        if std::thread::panicking() {
            // Already failing: say so, without a second panic (which would abort).
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// A pool on the real PostgreSQL.
pub async fn pg() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(PG_URL)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432")
}
