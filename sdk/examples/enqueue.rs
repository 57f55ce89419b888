//! Enqueue a job for any RQ-compatible worker and wait for its result.
//!
//! ```bash
//! mindora-worker --redis-url redis://127.0.0.1:6379/9 &     # or: rq worker (with the function importable)
//! cargo run -p mindora-sdk --example enqueue -- redis://127.0.0.1:6379/9
//! ```

use std::time::Duration;

use mindora_sdk::{Client, EnqueueOptions, RetryPolicy, Serializer};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/9".into());
    let client = Client::connect(&url).await?;
    let job = client
        .enqueue(
            "default",
            "mindora.echo",
            vec![json!("hello from Rust")],
            json!({"n": 1}).as_object().cloned().unwrap_or_default(),
            EnqueueOptions {
                serializer: Serializer::Json,
                retry: Some(RetryPolicy::Exponential {
                    max_attempts: 4,
                    base_secs: 1.0,
                    factor: 2.0,
                    cap_secs: 30.0,
                    jitter: 0.2,
                }),
                timeout_secs: Some(60),
                ..Default::default()
            },
        )
        .await?;
    println!("enqueued {} ({})", job.id, job.status);
    let value = client.wait(&job, Duration::from_secs(30)).await?;
    println!("result: {value}");
    Ok(())
}
