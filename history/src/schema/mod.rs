//! The history's connection pool and migrations, in a schema of its own.

mod migrate;

pub use migrate::migrate;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use crate::config::validate_schema;
use crate::{HistoryConfig, HistoryError};

/// A pool whose connections all resolve names in `config.schema` first (then `public`,
/// where `pg_trgm` lives). Lazy: nothing connects until the first statement, so an
/// unreachable PostgreSQL never stops the caller.
pub fn pool(config: &HistoryConfig) -> Result<PgPool, HistoryError> {
    validate_schema(&config.schema)?;
    let options = PgConnectOptions::from_str(&config.database_url)
        .map_err(|e| HistoryError::Config(format!("history database URL: {e}")))?
        .application_name("mindora-history");
    let search_path = format!("SET search_path TO {}, public", quoted(&config.schema));
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(config.connect_timeout)
        .after_connect(move |conn, _meta| {
            let sql = AssertSqlSafe(search_path.clone());
            Box::pin(async move {
                conn.execute(sql).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// `host:port/database` of the URL (no credentials), for logs.
pub fn describe(database_url: &str) -> String {
    match PgConnectOptions::from_str(database_url) {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

/// `"name"`: a validated schema name, quoted.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}
