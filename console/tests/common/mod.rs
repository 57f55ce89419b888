//! The console's test harness: the real router on a random loopback port, over a leased
//! Redis database and a PostgreSQL history schema of the test's own, with two users
//! (`ann`, operator; `bob`, viewer), under the base path `/console`.

#![allow(dead_code)]

#[cfg(feature = "browser-tests")]
pub mod browser;

use std::path::PathBuf;

use anyhow::{Context, Result};
use mindora_console::data::history::History;
use mindora_console::web::users::{add_user, Role};
use mindora_console::web::users_file::UsersFile;
use mindora_console::web::{router, AppState, Backend, Config};
use mindora_sdk::connect::ManagerOptions;
use mindora_sdk::RedisConnector;
use mindora_tests::RedisDb;
use reqwest::{redirect, Client, StatusCode};

pub const BASE: &str = "/console";
pub const OPERATOR: (&str, &str) = ("ann", "ann-operator-pw");
pub const VIEWER: (&str, &str) = ("bob", "bob-viewer-pw");
/// MINDORA_CONSOLE_SECRET of the test consoles.
pub const SECRET: &[u8] = b"test secret test secret test secret 0123";

/// The shared PostgreSQL test database.
pub fn pg_url() -> String {
    std::env::var("MINDORA_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct Console {
    pub addr: std::net::SocketAddr,
    /// `None`: the console runs without a history.
    pub history: Option<History>,
    pub redis_url: String,
    /// The users file the console re-reads when it changes.
    pub users_file: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Console {
    /// `base` + `path`, absolute.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{BASE}{path}", self.addr)
    }

    /// Starts the console on `db` with the history in `schema` (dropped and migrated
    /// afresh, so a test runs twice in a row).
    pub async fn start(db: &RedisDb, schema: &str) -> Result<Console> {
        Console::start_with(db, Some(schema)).await
    }

    /// As [`Console::start`]; without a history when `schema` is `None`.
    pub async fn start_with(db: &RedisDb, schema: Option<&str>) -> Result<Console> {
        Console::start_full(db, schema, None, None).await
    }

    /// As [`Console::start_with`], with RabbitMQ (URL and work queues) for the DLQ page,
    /// and the history at `away_url` (not migrated: a database that is not there) if given.
    pub async fn start_full(
        db: &RedisDb,
        schema: Option<&str>,
        amqp: Option<(String, Vec<String>)>,
        away_url: Option<&str>,
    ) -> Result<Console> {
        let dir = tempfile::tempdir()?;
        let users_file: PathBuf = dir.path().join("users");
        add_user(&users_file, OPERATOR.0, Role::Operator, OPERATOR.1)?;
        add_user(&users_file, VIEWER.0, Role::Viewer, VIEWER.1)?;
        let users = UsersFile::open(&users_file, std::time::Duration::from_millis(100))?;

        let history = match (schema, away_url) {
            (Some(schema), Some(url)) => Some(History::connect(url, schema)?),
            (None, _) => None,
            (Some(schema), None) => {
                let admin = sqlx::PgPool::connect(&pg_url())
                    .await
                    .context("PostgreSQL")?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&admin)
                .await?;
                admin.close().await;
                let history = History::connect(&pg_url(), schema)?;
                history.migrate().await?;
                Some(history)
            }
        };

        let redis = RedisConnector::from_url(&db.url())?
            .manager(&ManagerOptions::default())
            .await?;
        let cfg = Config {
            base_path: BASE.into(),
            trace_url: Some("https://traces.example/trace/{trace_id}".into()),
            session_hours: 1,
            secure_cookie: false,
        };
        let backend = Backend {
            redis,
            history: history.clone(),
            amqp,
        };
        let state = AppState::new(
            cfg,
            users,
            b"test secret test secret test secret 0123",
            backend,
        )
        .map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = router(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Console {
            addr,
            history,
            redis_url: db.url(),
            users_file,
            _dir: dir,
            server,
        })
    }

    pub fn history(&self) -> Result<&History> {
        self.history
            .as_ref()
            .context("this console runs without a history")
    }

    /// Writes one attempt row as the history writer would.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_attempt(
        &self,
        job_id: &str,
        queue: &str,
        function: &str,
        attempt: i32,
        status: &str,
        ago_secs: i64,
        error: Option<(&str, &str)>,
        retry_in_secs: Option<i64>,
    ) -> Result<()> {
        let ended = chrono::Utc::now() - chrono::Duration::seconds(ago_secs);
        let started = ended - chrono::Duration::milliseconds(1500);
        let enqueued = started - chrono::Duration::milliseconds(250);
        sqlx::query(
            "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
             status, worker, enqueued_at, started_at, wait_ms, run_ms, error_type, error_message, \
             args_summary, retry_at, trace_id) VALUES ($1,$2,'redis',$3,$4,$5,$6,$7,$8,$9,250,1500,$10,$11,$12,$13,$14)",
        )
        .bind(ended)
        .bind(job_id)
        .bind(queue)
        .bind(function)
        .bind(attempt)
        .bind(status)
        .bind(format!("test-worker-{attempt}"))
        .bind(enqueued)
        .bind(started)
        .bind(error.map(|e| e.0))
        .bind(error.map(|e| e.1))
        .bind("(42,) {}")
        .bind(retry_in_secs.map(|s| ended + chrono::Duration::seconds(s)))
        .bind("4bf92f3577b34da6a3ce929d0e0e4736")
        .execute(self.history()?.pool())
        .await?;
        Ok(())
    }

    /// A plausible 72 h of one function for the charts: finished attempts every hour (more
    /// by day), some failures, run times that grow in a slow period.
    pub async fn seed_hours(&self, function: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO mindora_job_attempts (ended_at, job_id, source, queue, function, attempt, \
             status, worker, enqueued_at, started_at, wait_ms, run_ms, error_type, error_message) \
             SELECT now() - make_interval(hours => h, secs => i), 'seed-' || h || '-' || i, 'redis', 'reports', $1, 1, \
               CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'finished' END, 'seed-worker', \
               now() - make_interval(hours => h, secs => i + 2), now() - make_interval(hours => h, secs => i + 1), 40, \
               200 + (h % 24) * 40 + i * 3 + CASE WHEN h BETWEEN 30 AND 36 THEN 3000 ELSE 0 END, \
               CASE WHEN i % 7 = 0 THEN 'TimeoutError' END, CASE WHEN i % 7 = 0 THEN 'report ' || h || ' timed out' END \
             FROM generate_series(1, 71) h, generate_series(0, 30) i WHERE i < 8 + 10 * sin(h / 4.0) + 10",
        )
        .bind(function)
        .execute(self.history()?.pool())
        .await?;
        Ok(())
    }

    /// The audit rows, newest first: (user, action, target, jobs).
    pub async fn audit(&self) -> Result<Vec<(String, String, String, i32)>> {
        Ok(self
            .history()?
            .recent_actions(100)
            .await?
            .into_iter()
            .map(|r| (r.username, r.action, r.target, r.jobs))
            .collect())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The CSRF token of the first form in `html` (a hidden `csrf` field).
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(
        html[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect(),
    )
}

/// A client with a cookie store that does not follow redirects (tests look at them).
pub fn client() -> Result<Client> {
    Ok(Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .build()?)
}

pub async fn login(c: &Client, con: &Console, user: &str, pw: &str) -> Result<()> {
    let form = c.get(con.url("/login")).send().await?.text().await?;
    let token = csrf_of(&form).unwrap_or_default();
    let r = c
        .post(con.url("/login"))
        .form(&[
            ("username", user),
            ("password", pw),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    Ok(())
}

pub async fn get(c: &Client, con: &Console, path: &str) -> Result<(StatusCode, String)> {
    let r = c.get(con.url(path)).send().await?;
    Ok((r.status(), r.text().await?))
}
