//! The writer's settings.

use std::time::Duration;

use crate::HistoryError;

/// The default schema of the history tables.
pub const DEFAULT_SCHEMA: &str = "mindora_history";

/// How the history is written.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// `postgres://...`.
    pub database_url: String,
    /// Schema holding the tables (created if missing); tests use one of their own.
    pub schema: String,
    /// Day partitions older than this many days are dropped; 0 keeps everything.
    pub retention_days: u32,
    /// Rows held while PostgreSQL is slow or away; more are dropped and counted.
    pub buffer: usize,
    /// Rows per insert (one round trip).
    pub batch_max: usize,
    /// A batch is written at least this often when rows are waiting.
    pub flush_every: Duration,
    /// The name written rows are counted under (`mindora_history_writers.worker`).
    pub writer_name: String,
    /// How long a connection attempt or a statement may take before it counts as failed.
    pub connect_timeout: Duration,
}

impl HistoryConfig {
    /// Defaults for everything but the database and the writer's name.
    pub fn new(database_url: impl Into<String>, writer_name: impl Into<String>) -> Self {
        HistoryConfig {
            database_url: database_url.into(),
            schema: DEFAULT_SCHEMA.into(),
            retention_days: 14,
            buffer: 10_000,
            batch_max: 500,
            flush_every: Duration::from_millis(200),
            writer_name: writer_name.into(),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// Checks what cannot work whatever PostgreSQL says.
    pub fn validate(&self) -> Result<(), HistoryError> {
        validate_schema(&self.schema)?;
        if self.buffer == 0 || self.batch_max == 0 {
            return Err(HistoryError::Config(
                "the history buffer and batch size must be at least 1".into(),
            ));
        }
        if self.writer_name.trim().is_empty() {
            return Err(HistoryError::Config("the writer needs a name".into()));
        }
        Ok(())
    }
}

/// A schema name used unquoted-safe: letters, digits and `_`, not starting with a digit,
/// at most 63 bytes (PostgreSQL's identifier limit). It is then always written quoted.
pub fn validate_schema(schema: &str) -> Result<(), HistoryError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(HistoryError::Config(format!(
            "history schema {schema:?}: use letters, digits and _ (not first), at most 63"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(validate_schema("mindora_history").is_ok());
        assert!(validate_schema("t_1").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", "a b", &"x".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_must_be_positive() {
        let mut c = HistoryConfig::new("postgres://x", "w");
        assert!(c.validate().is_ok());
        c.buffer = 0;
        assert!(c.validate().is_err());
    }
}
