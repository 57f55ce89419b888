//! Durable job history (issue 22): every execution attempt of every source as a row in
//! PostgreSQL (`migrations/`), written in batches off the job path.

/// The schema, applied by `mindora-worker` and `mindora-console` at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
