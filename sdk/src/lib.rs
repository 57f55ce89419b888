//! mindora-sdk: enqueue RQ-compatible jobs from Rust.
pub mod wire;
