//! `mindora-console`: `serve` runs the web console; `add-user` adds a user to the users file.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mindora_console::data::history::{History, DEFAULT_SCHEMA};
use mindora_console::web::users::{add_user, Role};
use mindora_console::web::users_file::{UsersFile, CHECK_EVERY};
use mindora_console::web::{router, AppState, Backend, Config};
use mindora_sdk::connect::ManagerOptions;
use mindora_sdk::RedisConnector;

#[derive(Parser)]
#[command(
    name = "mindora-console",
    version,
    about = "The task console of rq and RabbitMQ jobs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the console over HTTP (put it behind a TLS proxy).
    Serve(Serve),
    /// Add or replace a user in the users file; the password is read from stdin.
    AddUser {
        /// The users file (created when missing).
        #[arg(long)]
        file: PathBuf,
        /// viewer (sees) or operator (also acts).
        #[arg(long, value_parser = ["viewer", "operator"])]
        role: String,
        /// The user name.
        name: String,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, env = "MINDORA_CONSOLE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Redis holding the rq queues (also read from REDIS_URL); rediss:// and
    /// redis+sentinel:// URLs work as for the worker.
    #[arg(long, env = "MINDORA_REDIS_URL")]
    redis_url: Option<String>,
    /// The job history (PostgreSQL); without it the console shows only what Redis holds.
    #[arg(long, env = "MINDORA_HISTORY_DATABASE_URL")]
    history_database_url: Option<String>,
    /// Schema of the history tables.
    #[arg(long, env = "MINDORA_HISTORY_SCHEMA", default_value = DEFAULT_SCHEMA)]
    history_schema: String,
    /// Apply the history migrations at start (off where the workers own the schema and the
    /// console's role may only read it, as in the compose stack).
    #[arg(long, env = "MINDORA_HISTORY_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    history_migrate: bool,
    /// RabbitMQ, for the dead-letter page.
    #[arg(long, env = "MINDORA_AMQP_URL")]
    amqp_url: Option<String>,
    /// Work queues whose dead-letter queues (`Q.dlq`) the console shows.
    #[arg(long, env = "MINDORA_AMQP_QUEUES", value_delimiter = ',')]
    amqp_queues: Vec<String>,
    /// The users file (`name:role:$argon2id$...` lines; see `add-user`).
    #[arg(long, env = "MINDORA_CONSOLE_USERS_FILE")]
    users_file: PathBuf,
    /// Path prefix behind a reverse proxy, e.g. /console.
    #[arg(long, env = "MINDORA_CONSOLE_BASE_PATH", default_value = "")]
    base_path: String,
    /// Trace link template, e.g. https://host/jaeger/trace/{trace_id}.
    #[arg(long, env = "MINDORA_CONSOLE_TRACE_URL")]
    trace_url: Option<String>,
    /// Hours a login lasts.
    #[arg(long, env = "MINDORA_CONSOLE_SESSION_HOURS", default_value_t = 12)]
    session_hours: i64,
    /// Mark cookies Secure (on behind TLS).
    #[arg(long, env = "MINDORA_CONSOLE_SECURE_COOKIE", default_value_t = false)]
    secure_cookie: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::AddUser { file, role, name } => {
            let role = Role::parse(&role).context("role must be viewer or operator")?;
            let password = read_password()?;
            add_user(&file, &name, role, &password)?;
            eprintln!("{name} ({}) written to {}", role.as_str(), file.display());
            Ok(())
        }
        Cmd::Serve(s) => tokio::runtime::Runtime::new()?.block_on(serve(s)),
    }
}

/// The password: at a terminal, prompted and read without echo (rpassword); otherwise
/// one line piped on stdin.
fn read_password() -> Result<String> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        rpassword::prompt_password("password: ").context("reading the password")?
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line
    };
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("no password on stdin");
    }
    Ok(pw)
}

async fn serve(s: Serve) -> Result<()> {
    if s.session_hours < 1 {
        bail!("MINDORA_CONSOLE_SESSION_HOURS must be at least 1");
    }
    let secret = std::env::var("MINDORA_CONSOLE_SECRET")
        .context("MINDORA_CONSOLE_SECRET is not set (at least 32 bytes of random text)")?;
    let users = UsersFile::open(&s.users_file, CHECK_EVERY)?;
    if users.current().is_empty() {
        bail!(
            "{} has no user: add one with `mindora-console add-user`",
            s.users_file.display()
        );
    }
    let redis_url = s
        .redis_url
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let connector = RedisConnector::from_url(&redis_url)?;
    let redis = connector
        .manager(&ManagerOptions::default())
        .await
        .with_context(|| format!("connecting to {}", connector.describe()))?;
    let history = match &s.history_database_url {
        None => {
            tracing::warn!("MINDORA_HISTORY_DATABASE_URL is not set: the history is off");
            None
        }
        Some(url) => {
            let h = History::connect(url, &s.history_schema)?;
            if !s.history_migrate {
                tracing::info!(
                    "history migrations left to the workers (MINDORA_HISTORY_MIGRATE=false)"
                );
            } else if let Err(e) = h.migrate().await {
                tracing::warn!("history schema not migrated now (pages will say so): {e}");
            }
            // The 72 h charts' closed hours, computed in the background: the first overview
            // after a start does not wait ~1 s for them.
            drop(h.warm());
            Some(h)
        }
    };
    let amqp = match s.amqp_url {
        Some(url) if !s.amqp_queues.is_empty() => Some((url, s.amqp_queues)),
        Some(_) => {
            tracing::warn!("MINDORA_AMQP_URL set without MINDORA_AMQP_QUEUES: no dead-letter page");
            None
        }
        None => None,
    };
    let cfg = Config {
        base_path: Config::normalize_base(&s.base_path),
        trace_url: s.trace_url.filter(|t| !t.is_empty()),
        session_hours: s.session_hours,
        secure_cookie: s.secure_cookie,
    };
    let backend = Backend {
        redis,
        history,
        amqp,
    };
    let state =
        AppState::new(cfg, users, secret.as_bytes(), backend).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("listening on {}", s.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        base = %state.cfg.base_path,
        users = state.users.current().len(),
        "mindora-console serving"
    );
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// SIGINT or SIGTERM (docker stop, Kubernetes).
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
