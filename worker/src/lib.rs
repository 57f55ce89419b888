//! # mindora-worker
//!
//! The embeddable engine. It links none of the document pipelines' stack (S3, PostgreSQL,
//! Elasticsearch, Qdrant, PDFium): the `mindora-worker` binary, with the `pipelines.*`
//! handlers and Consul, is the `mindora-worker-app` crate on top of it.
//!
//! An RQ-compatible worker: it consumes the Redis queues Python's `rq` writes (and
//! RabbitMQ queues), runs many jobs at once per process, and records every outcome exactly
//! as rq does, so Python code keeps reading statuses and results with `rq` itself.
//!
//! - [`Worker`]: the embeddable worker (`Worker::from_env()?.handler(..).run().await`).
//! - [`handler`]: the functions a worker serves, by name (and a fallback).
//! - [`core`]: the execution core both sources share (budget, timeout, panics, metrics,
//!   shutdown drain).
//! - [`rq`]: the Redis source (fetch, settle, heartbeat, maintenance, commands, store);
//!   the wire format itself is `mindora_sdk::wire`.
//! - [`amqp`]: the RabbitMQ source (consume, settle, topology).
//! - [`builtins`]: `mindora.echo`, `mindora.sleep`, `mindora.fail`, `mindora.noop`.
//! - [`metrics`], [`http`]: Prometheus metrics and the health endpoints.
//! - [`python`]: the `--python` pool running rq jobs written in Python.
//! - [`config`]: the engine's flags and environment; [`connect_args`]: TLS / ACL / Sentinel flags.
//! - [`backlog`]: the `mindora_queue_backlog` gauge autoscalers read.
//! - [`logging`]: the log subscriber with a reloadable filter.
//! - [`memory`]: an in-process source (tests; embedding without a broker).
//! - [`webhooks`]: rq's `Webhook`s, sent after an outcome is persisted.
//! - [`ratelimit`]: maintenance of rq 3.0's `RateLimit` slots.
//! - [`cron`]: periodic jobs, each tick enqueued once across replicas.

#![warn(missing_docs)]

pub mod amqp;
pub mod backlog;
pub mod backoff;
pub mod builtins;
pub mod config;
pub mod connect_args;
pub mod core;
pub mod cron;
pub mod handler;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod python;
pub mod ratelimit;
pub mod rq;
pub mod telemetry;
pub mod webhooks;
pub mod worker;

pub use worker::{init_logging, Worker, WorkerError, WorkerHandle};
