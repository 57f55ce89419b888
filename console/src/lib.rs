//! The task console (issue 22): a server-rendered web UI over rq's Redis state, RabbitMQ's
//! dead letters and the PostgreSQL job history. Apart from the engine: it reads and acts on
//! the same wire format (`mindora_sdk::wire`) that Python rq and the worker use.
//!
//! - [`data`]: what the pages show and do, as typed functions (no HTTP).
//! - [`web`]: axum routes, login, CSRF, rendering.

pub mod data;
pub mod web;
