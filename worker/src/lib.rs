//! # mindora-worker
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
//! - [`pipelines`]: the `pipelines.*` document handlers.
//! - [`python`]: the `--python` pool running rq jobs written in Python.
//! - [`config`]: command line and environment; [`connect_args`]: TLS / ACL / Sentinel flags.
//! - [`backlog`]: the `mindora_queue_backlog` gauge autoscalers read.
//! - [`consul`]: Consul registration, KV settings and live reload.
//! - [`logging`]: the log subscriber with a reloadable filter.
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
pub mod consul;
pub mod core;
pub mod cron;
pub mod handler;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipelines;
pub mod python;
pub mod ratelimit;
pub mod rq;
pub mod webhooks;
pub mod worker;

pub use worker::{init_logging, Worker, WorkerError, WorkerHandle};
