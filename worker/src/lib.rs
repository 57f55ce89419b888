//! # mindora-worker
//!
//! An RQ-compatible worker: it consumes the Redis queues Python's `rq` writes, runs many
//! jobs at once per process, and records every outcome exactly as rq does, so Python code
//! keeps reading statuses and results with `rq` itself.
//!
//! - [`handler`]: the functions a worker serves, by name.
//! - [`builtins`]: `mindora.echo`, `mindora.sleep`, `mindora.fail`, `mindora.noop`.
//! - [`runner`]: the worker loop (claim, run, record, heartbeat, schedule, recover).
//! - [`rq_store`]: the worker's side of the rq protocol; the wire format itself is
//!   `mindora_sdk::wire`.
//! - [`metrics`]: Prometheus metrics and health endpoints.
//! - [`pipelines`]: the `pipelines.*` document handlers.
//! - [`amqp`]: the RabbitMQ task source and topology.
//! - [`config`]: command line and environment.

#![warn(missing_docs)]

pub mod amqp;
pub mod builtins;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod pipelines;
pub mod rq_store;
pub mod runner;
