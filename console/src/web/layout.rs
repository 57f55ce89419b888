//! The page shell (navigation, who is logged in, the history banner), small rendering
//! helpers, the stylesheet, and the error pages.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use super::AppState;
use crate::data::HistoryState;

const CSS: &str = include_str!("console.css");

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// Options of one page.
#[derive(Default)]
pub struct Page<'a> {
    pub title: &'a str,
    /// Reload every N seconds (a `<meta refresh>`: no script needed).
    pub refresh: Option<u32>,
    pub history: Option<&'a HistoryState>,
}

/// A whole HTML page around `body`.
pub fn page(state: &AppState, s: Option<&Session>, p: Page<'_>, body: Markup) -> Markup {
    let l = |path: &str| state.cfg.link(path);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(n) = p.refresh { meta http-equiv="refresh" content=(n); }
                title { (p.title) " · mindora console" }
                link rel="stylesheet" href=(l("/static/console.css"));
            }
            body {
                @if let Some(s) = s {
                    header.top {
                        a.brand href=(l("/")) { "mindora console" }
                        nav {
                            a href=(l("/")) { "Overview" }
                            a href=(l("/search")) { "Search" }
                            a href=(l("/errors")) { "Errors" }
                            a href=(l("/cron")) { "Cron" }
                            a href=(l("/ratelimits")) { "Rate limits" }
                            a href=(l("/dlq")) { "Dead letters" }
                            a href=(l("/audit")) { "Audit" }
                        }
                        div.who {
                            span { (s.user) " (" (s.role.as_str()) ")" }
                            form.inline method="post" action=(l("/logout")) {
                                (csrf_field(s))
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some(h) = p.history { (history_banner(h)) }
                    (body)
                }
            }
        }
    }
}

/// The banner when the history is off, unreachable or incomplete.
pub fn history_banner(h: &HistoryState) -> Markup {
    match h {
        HistoryState::Off => html! {
            div.banner.info { "History is off (no MINDORA_HISTORY_DATABASE_URL): this console shows only what Redis holds now." }
        },
        HistoryState::Unreachable(why) => html! {
            div.banner.warn { "History database unreachable: " (why) ". Showing only what Redis holds." }
        },
        HistoryState::On { dropped } if *dropped > 0 => html! {
            div.banner.warn { "The history is missing " (dropped) " rows that workers dropped (database slow or down): counts and charts are low." }
        },
        HistoryState::On { .. } => html! {},
    }
}

/// The session's CSRF token as a hidden form field.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A one-button form that POSTs to `action` (operators only; nothing for viewers).
pub fn post_button(
    state: &AppState,
    s: &Session,
    action: &str,
    label: &str,
    class: &str,
) -> Markup {
    if !s.is_operator() {
        return html! {};
    }
    html! {
        form.inline method="post" action=(state.cfg.link(action)) {
            (csrf_field(s))
            button class=(class) type="submit" { (label) }
        }
    }
}

pub fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => {
            html! { time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
        }
        None => html! { span.muted { "—" } },
    }
}

/// "3 s", "4 min 10 s", "2 h 5 min".
pub fn duration_ms(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// "12 s ago".
pub fn ago(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => {
            let d = (Utc::now() - t).num_milliseconds().max(0);
            format!("{} ago", duration_ms(d))
        }
        None => "never".into(),
    }
}

/// A link to a job page.
pub fn job_link(state: &AppState, id: &str) -> Markup {
    html! { a.mono href=(state.cfg.link(&format!("/jobs/{}", enc(id)))) { (id) } }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "finished" => "ok",
        "failed" | "stopped" | "dropped" => "bad",
        "retried" | "canceled" | "given_back" => "warn",
        "started" | "busy" => "run",
        _ => "neutral",
    };
    html! { span class={"badge " (class)} { (status) } }
}

/// A page that explains an error (status code and message).
pub fn error_page(state: &AppState, s: Option<&Session>, code: StatusCode, msg: &str) -> Response {
    let title = code.canonical_reason().unwrap_or("Error");
    let body = page(
        state,
        s,
        Page {
            title,
            ..Default::default()
        },
        html! {
            h1 { (code.as_u16()) " " (title) }
            p.error { (msg) }
            p { a href=(state.cfg.link("/")) { "Back to the overview" } }
        },
    );
    (code, body).into_response()
}

pub fn forbidden(state: &AppState, s: &Session, why: &str) -> Response {
    tracing::warn!(user = %s.user, role = s.role.as_str(), "refused: {why}");
    error_page(state, Some(s), StatusCode::FORBIDDEN, why)
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Text shown as-is in a `<pre>` (escaped).
pub fn pre(text: &str) -> Markup {
    html! { pre { (text) } }
}
