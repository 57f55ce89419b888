//! Test kit of the document pipelines (feature `pipelines`): a real S3 server (s3s-fs), local
//! servers speaking the real wire formats of the OpenAI API, Elasticsearch and Qdrant (gRPC),
//! each checking every request it receives, document fixtures, and a cleanup guard for the
//! shared PostgreSQL and RabbitMQ. Used by `pipelines/tests`, `pipelines/examples/extract_bench`
//! and `tests/tests/pipelines_e2e.rs`.

mod cleanup;
pub mod e2e;
mod env;
pub mod fakes;
pub mod fixtures;
mod gate;
mod http;
mod s3;

use std::sync::Mutex;

use mindora_pipelines::ProgressSink;
use serde_json::{Map, Value};

pub use cleanup::{cleanup, pg, Cleanup};
pub use env::{amqp_get, env, long_pdf, Env, Services};
pub use gate::Gate;
pub use http::{serve, Handler, Req, Resp};
pub use s3::{s3s_fs_binary, S3Server};

/// A name unique to this test run, valid as an app name, queue name and bucket name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";
pub const S3_KEY: &str = "mindora-test";
pub const S3_SECRET: &str = "mindora-test-secret";

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
