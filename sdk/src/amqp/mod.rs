//! The RabbitMQ side of the SDK: the task envelope every AMQP publisher and the worker
//! agree on ([`message`], no I/O, always built), a publisher that waits for the broker's confirm on every message, and
//! [`AmqpClient::call`], a request/reply round trip over `reply_to` + `correlation_id`.
//!
//! The envelope lives here (not in the worker) so that the Rust publisher and the worker
//! can never disagree about it; Python publishers follow the same contract, documented in
//! `docs/amqp.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mindora_sdk::amqp::AmqpError> {
//! use mindora_sdk::amqp::{AmqpClient, Envelope};
//! let client = AmqpClient::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! client.publish("ai_processing_tasks", &Envelope::new("mindora.echo", vec![1.into()])).await?;
//! let value = client
//!     .call("mindora.echo", vec![2.into()], Default::default(), std::time::Duration::from_secs(5))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The client needs the `amqp` cargo feature (on by default); without it the SDK links no
//! AMQP library and only the message contract is built.

#[cfg(feature = "amqp")]
mod client;
pub mod message;

#[cfg(feature = "amqp")]
pub use client::*;
pub use message::*;
