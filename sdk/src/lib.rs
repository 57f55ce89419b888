//! # mindora-sdk
//!
//! Enqueue jobs for RQ-compatible workers from Rust, and read their status and results.
//! Jobs are written in rq's own wire format ([`wire`]), so they run on `mindora-worker`
//! or on a Python `rq worker` alike, and Python code can inspect them with `rq.job.Job`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mindora_sdk::SdkError> {
//! use mindora_sdk::{Client, EnqueueOptions};
//! let client = Client::connect("redis://127.0.0.1/0").await?;
//! let job = client
//!     .enqueue("default", "mindora.echo", vec![1.into()], Default::default(), EnqueueOptions::default())
//!     .await?;
//! let value = client.wait(&job, std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod amqp;
pub mod backlog;
pub mod client;
pub mod connect;
pub mod error;
pub mod options;
pub mod trace;
pub mod wire;

pub use client::{Client, EnqueueOptions, EnqueuedJob};
pub use connect::{RedisConn, RedisConnector, RedisSettings};
pub use error::SdkError;
pub use options::{RateLimit, Repeat, Webhook, WebhookMethod, WebhookStatus};
pub use wire::{JobStatus, RetryPolicy, Serializer};
