//! The console's HTTP side: axum routes rendered on the server with maud, a login over the
//! users file, sessions in a private cookie, CSRF tokens on every form, viewer and operator
//! roles, security headers, and every link under MINDORA_CONSOLE_BASE_PATH (behind nginx).

pub mod actions;
pub mod backend;
pub mod bulk;
pub mod charts;
pub mod headers;
pub mod layout;
pub mod login;
pub mod pages;
pub mod search;
pub mod session;
pub mod throttle;
pub mod users;
pub mod users_file;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::Key;

pub use backend::Backend;

/// Everything the console is told at start (the binary reads it from the environment).
#[derive(Debug, Clone)]
pub struct Config {
    /// Path prefix behind a reverse proxy (`/console`), empty at the root; no trailing `/`.
    pub base_path: String,
    /// `https://host/jaeger/trace/{trace_id}`.
    pub trace_url: Option<String>,
    /// Hours a login lasts.
    pub session_hours: i64,
    /// Mark cookies Secure (set behind TLS).
    pub secure_cookie: bool,
}

impl Config {
    /// Normalizes a base path: `""`, `"/"` → `""`; `"console/"` → `"/console"`.
    pub fn normalize_base(path: &str) -> String {
        let p = path.trim().trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        }
    }

    /// `path` (starting with `/`) under the base path.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    pub fn cookie_path(&self) -> String {
        if self.base_path.is_empty() {
            "/".into()
        } else {
            self.base_path.clone()
        }
    }

    /// The trace link of a trace id, when a template is configured.
    pub fn trace_link(&self, trace_id: &str) -> Option<String> {
        let ok = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        self.trace_url
            .as_ref()
            .filter(|_| ok)
            .map(|t| t.replace("{trace_id}", trace_id))
    }
}

/// Shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    /// The users file, reloaded when it changes.
    pub users: Arc<users_file::UsersFile>,
    pub key: Key,
    pub backend: Backend,
    pub throttle: Arc<throttle::Throttle>,
}

impl axum::extract::FromRef<AppState> for Key {
    fn from_ref(s: &AppState) -> Key {
        s.key.clone()
    }
}

impl AppState {
    /// `secret` must have at least 32 bytes; the cookie key is derived from it (HKDF).
    pub fn new(
        cfg: Config,
        users: impl Into<users_file::UsersFile>,
        secret: &[u8],
        backend: Backend,
    ) -> Result<AppState, String> {
        if secret.len() < 32 {
            return Err(format!(
                "MINDORA_CONSOLE_SECRET has {} bytes; it needs at least 32",
                secret.len()
            ));
        }
        Ok(AppState {
            cfg: Arc::new(cfg),
            users: Arc::new(users.into()),
            key: Key::derive_from(secret),
            backend,
            throttle: Arc::new(throttle::Throttle::default()),
        })
    }
}

/// Every route, under the base path, with the security headers.
pub fn router(state: AppState) -> Router {
    let b = state.cfg.base_path.clone();
    let p = |path: &str| format!("{b}{path}");
    let mut r = Router::new()
        .route(&p("/"), get(pages::overview::page))
        .route(&p("/login"), get(login::form).post(login::submit))
        .route(&p("/logout"), post(login::logout))
        .route(&p("/static/console.css"), get(layout::css))
        .route(&p("/queues/{queue}/{registry}"), get(pages::queue::page))
        .route(&p("/queues/{queue}/pause"), post(actions::pause_queue))
        .route(&p("/queues/{queue}/resume"), post(actions::resume_queue))
        .route(&p("/suspend"), post(actions::suspend))
        .route(&p("/resume"), post(actions::resume))
        .route(&p("/jobs/{id}"), get(pages::job::page))
        .route(&p("/jobs/{id}/{action}"), post(actions::job_action))
        .route(&p("/search"), get(search::search))
        .route(&p("/errors"), get(search::errors))
        .route(&p("/bulk"), get(bulk::preview).post(bulk::run))
        .route(&p("/cron"), get(pages::misc::cron))
        .route(&p("/ratelimits"), get(pages::misc::rate_limits))
        .route(&p("/dlq"), get(pages::misc::dlq))
        .route(&p("/dlq/requeue"), post(actions::dlq_requeue))
        .route(&p("/audit"), get(pages::misc::audit));
    if !b.is_empty() {
        r = r.route(&b, get(pages::overview::page));
    }
    r.fallback(layout::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(headers::security))
}
