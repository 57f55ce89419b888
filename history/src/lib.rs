//! Durable job history (issue 22): every execution attempt of every source as a row in
//! PostgreSQL (`migrations/`), written in batches off the job path.
//!
//! - [`Writer`] takes [`Row`]s without ever waiting (a bounded buffer; rows that do not fit
//!   are dropped and counted) and a background task inserts them in batches, reconnecting
//!   with backoff while PostgreSQL is away, and flushing on shutdown within a bounded time.
//! - [`schema`]: the connection pool (one schema, `search_path` per connection) and the
//!   migrations, applied under an advisory lock (many replicas start at once).
//! - [`partitions`]: day partitions made ahead and dropped after the retention period.
//!
//! With the `worker` feature the writer is the engine's `AttemptSink`.

pub mod config;
pub mod error;
mod insert;
pub mod partitions;
pub mod row;
pub mod schema;
#[cfg(feature = "worker")]
mod sink;
pub mod writer;

pub use config::HistoryConfig;
pub use error::HistoryError;
pub use row::Row;
pub use writer::{start, Writer, WriterTask};

/// The schema, applied by `mindora-worker` and `mindora-console` at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows inserted, counted once their batch is committed.
pub const ROWS_WRITTEN: &str = "mindora_history_rows_written_total";
/// Rows lost: the buffer was full (PostgreSQL slow or away), PostgreSQL refused their batch,
/// or the shutdown flush ran out of time.
pub const ROWS_DROPPED: &str = "mindora_history_rows_dropped_total";
