//! A worker binary of your own: the same flags, `MINDORA_*` variables, metrics, health
//! endpoints and sources (rq queues, RabbitMQ) as `mindora-worker`, serving your handlers.
//!
//! ```sh
//! cargo run -p mindora-worker --example custom_handlers -- --queues default --burst
//! ```
//! then, from Python: `Queue(connection=r).enqueue("myapp.resize", 640, height=480)`.

use mindora_worker::config::LogFormat;
use mindora_worker::handler::{HandlerError, JobContext};
use mindora_worker::{init_logging, Worker};
use serde_json::{json, Value};

/// `myapp.resize(width, height=...)`: returns the new size and reports progress to
/// `job.meta`. Bad input is a permanent failure (no retry).
async fn resize(ctx: JobContext) -> Result<Value, HandlerError> {
    let width =
        ctx.args.first().and_then(Value::as_u64).ok_or_else(|| {
            HandlerError::permanent("ValueError", "width must be a positive integer")
        })?;
    let height = ctx
        .kwargs
        .get("height")
        .and_then(Value::as_u64)
        .unwrap_or(width);
    let mut meta = serde_json::Map::new();
    meta.insert("stage".into(), json!("resized"));
    ctx.save_meta(meta);
    Ok(json!({ "width": width, "height": height, "attempt": ctx.attempt }))
}

#[tokio::main]
async fn main() -> Result<(), mindora_worker::WorkerError> {
    init_logging(LogFormat::Text);
    Worker::from_env()?
        .handler("myapp.resize", resize)
        .handler("myapp.origin", |ctx: JobContext| async move {
            // The raw job: how it was stored and what the worker enforces on it.
            let raw = ctx.raw();
            Ok(json!({
                "queue": ctx.queue,
                "source": ctx.source,
                "serializer": raw.and_then(|r| r.serializer).map(|s| s.rq_path()),
                "timeout_secs": raw.and_then(|r| r.timeout).map(|t| t.as_secs()),
            }))
        })
        .run()
        .await
}
