//! Migrations under an advisory lock: many replicas start at once, and `CREATE SCHEMA` /
//! `CREATE EXTENSION` race even with `IF NOT EXISTS`.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::AssertSqlSafe;

use super::quoted;
use crate::{HistoryError, MIGRATOR};

/// Creates the schema and applies the migrations (each schema has its own
/// `_sqlx_migrations`, through the pool's `search_path`). Idempotent.
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), HistoryError> {
    crate::config::validate_schema(schema)?;
    let mut conn = pool.acquire().await?;
    let result = locked(&mut conn, schema).await;
    if result.is_err() {
        // The session may still hold the lock: close it rather than give it back.
        drop(conn.detach());
    }
    result
}

async fn locked(conn: &mut PgConnection, schema: &str) -> Result<(), HistoryError> {
    let key = format!("mindora_history.migrate:{schema}");
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(key.clone())
        .execute(&mut *conn)
        .await?;
    // `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema is
    // there; the stack's worker role has none (postgres-init makes the schema for it).
    let exists: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quoted(schema)
        )))
        .execute(&mut *conn)
        .await?;
    }
    // `run` over a borrowed connection is not Send in a spawned task (sqlx's "Acquire is
    // not general enough"); `run_direct` is the same call without the Acquire step.
    MIGRATOR.run_direct(None, &mut *conn, false).await?;
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
