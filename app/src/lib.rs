//! # mindora-worker-app
//!
//! The `mindora-worker` binary: the embeddable engine ([`mindora_worker::Worker`]) plus what a
//! deployment of the whole stack adds on top of it. The engine links none of this.
//!
//! - [`cli`]: the command line (subcommands; engine, pipelines and Consul flags).
//! - [`pipelines`]: the `pipelines.*` document handlers over `mindora-pipelines`.
//! - [`consul`]: Consul registration, KV settings and live reload.
//! - [`history`]: the durable job history's flags and writer (`mindora-history`).

#![warn(missing_docs)]

pub mod cli;
pub mod consul;
pub mod history;
pub mod pipelines;
