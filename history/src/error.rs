//! Why the history could not be set up or written.

/// A history error.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The settings cannot work (bad schema name, unparsable URL...).
    #[error("invalid history settings: {0}")]
    Config(String),
    /// PostgreSQL refused or failed a statement, or is unreachable.
    #[error("history database: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations failed.
    #[error("history migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl HistoryError {
    /// Whether trying again later may succeed (PostgreSQL down, restarting, or overloaded),
    /// as opposed to a batch it will always refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            HistoryError::Config(_) => false,
            HistoryError::Database(e) => transient(e),
            HistoryError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => transient(e),
            HistoryError::Migrate(_) => false,
        }
    }
}

fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            // Class 08 connection exceptions, 53 insufficient resources, 57 operator
            // intervention (shutdown, admin shutdown, cannot connect now), 40 rollbacks
            // (serialization, deadlock), 42P01 undefined table (schema dropped under us:
            // migrating again fixes it).
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code.starts_with("40")
                || code == "42P01"
                || code == "3F000"
        }
        _ => false,
    }
}
