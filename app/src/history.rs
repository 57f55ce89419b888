//! The durable job history (issue 22) in the binary: its flags, and the writer started as
//! the worker's attempt sink. Off unless `--history-database-url` is set; an unreachable
//! PostgreSQL never stops the worker (the writer retries and drops what does not fit).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mindora_history::{HistoryConfig, Writer, WriterTask};

/// Job history settings.
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// PostgreSQL URL of the job history; unset: no history is written.
    #[arg(long, global = true, env = "MINDORA_HISTORY_DATABASE_URL")]
    pub history_database_url: Option<String>,
    /// Schema of the history tables (created if missing).
    #[arg(long, global = true, env = "MINDORA_HISTORY_SCHEMA", default_value = mindora_history::config::DEFAULT_SCHEMA)]
    pub history_schema: String,
    /// Day partitions older than this many days are dropped (0: keep everything).
    #[arg(
        long,
        global = true,
        env = "MINDORA_HISTORY_RETENTION_DAYS",
        default_value_t = 14
    )]
    pub history_retention_days: u32,
    /// Rows held while PostgreSQL is slow or away; beyond this they are dropped and counted.
    #[arg(
        long,
        global = true,
        env = "MINDORA_HISTORY_BUFFER",
        default_value_t = 10_000
    )]
    pub history_buffer: usize,
}

impl HistoryArgs {
    /// The URL, unless unset or empty (a compose override turning the history off).
    pub fn url(&self) -> Option<&str> {
        self.history_database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

    /// The writer's settings for worker `name`, if the history is on.
    pub fn config(&self, name: &str) -> Option<HistoryConfig> {
        let url = self.url()?;
        let mut config = HistoryConfig::new(url, name);
        config.schema = self.history_schema.clone();
        config.retention_days = self.history_retention_days;
        config.buffer = self.history_buffer;
        Some(config)
    }
}

/// The running history writer of a worker process.
pub struct History {
    /// The job path's end (the worker's attempt sink).
    pub writer: Writer,
    task: WriterTask,
}

impl History {
    /// Starts the writer when the history is on; only invalid settings are an error.
    pub fn start(args: &HistoryArgs, name: &str) -> Result<Option<History>> {
        let Some(config) = args.config(name) else {
            return Ok(None);
        };
        let schema = config.schema.clone();
        let (writer, task) = mindora_history::start(config).context("job history settings")?;
        tracing::info!(%schema, "job history on");
        Ok(Some(History { writer, task }))
    }

    /// The sink to give the worker.
    pub fn sink(&self) -> Arc<dyn mindora_worker::core::AttemptSink> {
        Arc::new(self.writer.clone())
    }

    /// Flushes what is buffered, within `within`.
    pub async fn shutdown(self, within: Duration) {
        self.task.shutdown(within).await;
    }
}

/// `mindora-worker migrate --history`: applies the history schema and makes today's
/// partitions, then returns.
pub async fn migrate(args: &HistoryArgs) -> Result<()> {
    let config = args
        .config("migrate")
        .context("--history needs --history-database-url / MINDORA_HISTORY_DATABASE_URL")?;
    config.validate().context("job history settings")?;
    let pool = mindora_history::schema::pool(&config).context("job history settings")?;
    mindora_history::schema::migrate(&pool, &config.schema)
        .await
        .with_context(|| format!("migrating the job history schema {}", config.schema))?;
    let done = mindora_history::partitions::maintain(&pool, config.retention_days)
        .await
        .context("making the job history's day partitions")?;
    tracing::info!(schema = %config.schema, created = ?done.created, dropped = ?done.dropped, "job history migrated");
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn flags_work_before_and_after_migrate_and_empty_means_off() {
        let cli = Cli::try_parse_from([
            "mindora-worker",
            "migrate",
            "--history",
            "--history-database-url",
            "postgres://x/db",
            "--history-schema",
            "h1",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Migrate { history: true, .. })
        ));
        let config = cli.history.config("w").unwrap();
        assert_eq!(config.schema, "h1");
        assert_eq!(config.retention_days, 14);
        assert_eq!(config.writer_name, "w");

        let cli = Cli::try_parse_from(["mindora-worker", "--history-database-url", " "]).unwrap();
        assert!(cli.history.config("w").is_none());
    }
}
