//! Built-in handlers for smoke tests, health checks and benchmarks, callable from Python
//! by name: `q.enqueue("mindora.echo", 1, x=2)`. `mindora.sleep` reports its progress
//! (`job.meta`), so the progress path can be watched from Python.

use std::time::Duration;

use serde_json::{json, Value};

use crate::handler::{HandlerError, JobContext, Registry};

/// Adds `mindora.echo`, `mindora.sleep`, `mindora.fail`, `mindora.flaky` and `mindora.noop`.
pub fn register(registry: &mut Registry) {
    registry.register("mindora.echo", |ctx: JobContext| async move {
        Ok(json!({"args": ctx.args, "kwargs": ctx.kwargs}))
    });
    registry.register(
        "mindora.noop",
        |_ctx: JobContext| async move { Ok(Value::Null) },
    );
    registry.register("mindora.sleep", |ctx: JobContext| async move {
        let secs = ctx
            .args
            .first()
            .or_else(|| ctx.kwargs.get("seconds"))
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                HandlerError::permanent(
                    "ValueError",
                    "mindora.sleep needs a non-negative number of seconds",
                )
            })?;
        let mut progress = serde_json::Map::new();
        progress.insert("stage".into(), json!("sleeping"));
        progress.insert("seconds".into(), json!(secs));
        ctx.report_progress(progress);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        Ok(json!(secs))
    });
    registry.register("mindora.fail", |ctx: JobContext| async move {
        let message = ctx
            .args
            .first()
            .or_else(|| ctx.kwargs.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("mindora.fail was called")
            .to_string();
        Err::<Value, _>(HandlerError::retryable("RuntimeError", message))
    });
    // Fails its first `failures` attempts, then returns the attempt number: a job whose
    // retries end well, for the job history's attempt timeline.
    registry.register("mindora.flaky", |ctx: JobContext| async move {
        let failures = ctx
            .args
            .first()
            .or_else(|| ctx.kwargs.get("failures"))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        if u64::from(ctx.attempt) <= failures {
            return Err(HandlerError::retryable(
                "RuntimeError",
                format!("flaky attempt {} of {failures} failing", ctx.attempt),
            ));
        }
        Ok(json!(ctx.attempt))
    });
}
