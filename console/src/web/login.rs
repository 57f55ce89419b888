//! Login and logout. The login form carries its own CSRF token (a private cookie set with
//! the form), so even the login POST is checked; a session starts with a fresh CSRF token.

use super::actions::{token, CsrfForm, Posted};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::PrivateCookieJar;
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Page};
use super::session::{self, constant_eq, random_token, Session, LOGIN_COOKIE, SESSION_COOKIE};
use super::AppState;

pub async fn form(State(state): State<AppState>, jar: PrivateCookieJar) -> Response {
    if session::read(&jar, &state).is_some() {
        return Redirect::to(&state.cfg.link("/")).into_response();
    }
    render(&state, jar, None, StatusCode::OK)
}

fn render(
    state: &AppState,
    jar: PrivateCookieJar,
    error: Option<&str>,
    code: StatusCode,
) -> Response {
    let token = random_token();
    let jar = jar.add(session::cookie(state, LOGIN_COOKIE, token.clone()));
    let body = layout::page(
        state,
        None,
        Page {
            title: "Log in",
            ..Default::default()
        },
        html! {
            form.login method="post" action=(state.cfg.link("/login")) {
                h1 { "mindora console" }
                @if let Some(e) = error { p.error { (e) } }
                input type="hidden" name="csrf" value=(token);
                label for="username" { "User" }
                input #username type="text" name="username" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button.primary type="submit" { "Log in" }
            }
        },
    );
    (code, jar, body).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    csrf: Option<String>,
}

pub async fn submit(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Posted(f): Posted<LoginForm>,
) -> Response {
    let f = f.unwrap_or(LoginForm {
        username: String::new(),
        password: String::new(),
        csrf: None,
    });
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    let csrf_ok = match (&expected, &f.csrf) {
        (Some(e), Some(t)) => constant_eq(e.as_bytes(), t.as_bytes()),
        _ => false,
    };
    if !csrf_ok {
        tracing::warn!(user = %f.username, "login refused: missing or wrong CSRF token");
        return render(
            &state,
            jar,
            Some("The form expired or was not sent by this console; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let name = f.username.trim().to_string();
    if let Some(wait) = state.throttle.locked(&name) {
        tracing::warn!(user = %name, "login throttled");
        return render(
            &state,
            jar,
            Some(&format!(
                "Too many failed logins for this user; wait {wait} s."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    // argon2 takes tens of milliseconds: off the async threads.
    let users = state.users.current();
    let (n, p) = (name.clone(), f.password);
    let user = tokio::task::spawn_blocking(move || users.verify(&n, &p).cloned())
        .await
        .ok()
        .flatten();
    let Some(user) = user else {
        state.throttle.failed(&name);
        tracing::warn!(user = %name, "login failed: wrong user or password");
        return render(
            &state,
            jar,
            Some("Wrong user or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    state.throttle.succeeded(&name);
    let s = Session {
        user: user.name.clone(),
        role: user.role,
        csrf: random_token(),
        expires: Utc::now().timestamp() + state.cfg.session_hours * 3600,
    };
    tracing::info!(user = %s.user, role = s.role.as_str(), "logged in");
    let value = match serde_json::to_string(&s) {
        Ok(v) => v,
        Err(e) => {
            return layout::error_page(
                &state,
                None,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            )
        }
    };
    // A browser-session cookie; the expiry inside it is what counts.
    let c = session::cookie(&state, SESSION_COOKIE, value);
    let jar = jar.remove(session::removal(&state, LOGIN_COOKIE)).add(c);
    (jar, Redirect::to(&state.cfg.link("/"))).into_response()
}

pub async fn logout(
    State(state): State<AppState>,
    s: Session,
    jar: PrivateCookieJar,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    if !s.csrf_ok(token(&f).as_deref()) {
        return layout::forbidden(&state, &s, "missing or wrong CSRF token");
    }
    tracing::info!(user = %s.user, "logged out");
    let jar = jar.remove(session::removal(&state, SESSION_COOKIE));
    (jar, Redirect::to(&state.cfg.link("/login"))).into_response()
}
