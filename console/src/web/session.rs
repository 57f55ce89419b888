//! Sessions in a private cookie (encrypted and signed with a key derived from
//! MINDORA_CONSOLE_SECRET): who is logged in, their role, the CSRF token of the session and
//! when it expires. No server-side store: a restart keeps everyone logged in, a new secret
//! logs everyone out.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, PrivateCookieJar, SameSite};
use chrono::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::users::Role;
use super::AppState;

pub const SESSION_COOKIE: &str = "mindora_console_session";
/// The login form's own CSRF token (before there is a session).
pub const LOGIN_COOKIE: &str = "mindora_console_login";

/// A logged-in user (the extractor: any handler that takes one needs a valid session).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// Unix seconds.
    pub expires: i64,
}

impl Session {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether `token` (from a form) is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| constant_eq(t.as_bytes(), self.csrf.as_bytes()))
    }
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie with the console's attributes (HttpOnly, SameSite=Lax, its path, Secure when
/// configured).
pub fn cookie(state: &AppState, name: &'static str, value: String) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_path(state.cfg.cookie_path());
    c.set_secure(state.cfg.secure_cookie);
    c
}

pub fn removal(state: &AppState, name: &'static str) -> Cookie<'static> {
    let mut c = Cookie::from(name);
    c.set_path(state.cfg.cookie_path());
    c
}

/// The session in `jar`, if any and not expired.
pub fn read(jar: &PrivateCookieJar, state: &AppState) -> Option<Session> {
    let c = jar.get(SESSION_COOKIE)?;
    let s: Session = serde_json::from_str(c.value()).ok()?;
    if s.expires <= Utc::now().timestamp() {
        return None;
    }
    // A user removed from the file (or given another role) loses the old session.
    let users = state.users.current();
    let user = users.get(&s.user)?;
    (user.role == s.role).then_some(s)
}

/// Why a request has no session: browsers go to the login page, API clients get 401.
pub struct NoSession {
    html: bool,
    login: String,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        if self.html {
            Redirect::to(&self.login).into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Cookie realm=\"mindora-console\"")],
                "login required\n",
            )
                .into_response()
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let jar = PrivateCookieJar::from_headers(&parts.headers, state.key.clone());
        if let Some(s) = read(&jar, state) {
            return Ok(s);
        }
        let html = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        Err(NoSession {
            html,
            login: state.cfg.link("/login"),
        })
    }
}
