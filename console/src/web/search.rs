//! History search (id, function, queue, status, worker, source, time range, error text;
//! keyset paging) and failed attempts grouped by error. The filter form is shared with the
//! bulk actions: a search's "act on all of these" link carries the same query string.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use super::layout::{self, duration_ms, Page};
use super::session::Session;
use super::AppState;
use crate::data::{Filter, HistoryState};

const PAGE: i64 = 50;

/// The filter as an HTML form sends it (every field text; empty means unset).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FilterForm {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub queue: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `2026-12-07T10:00` (a datetime-local field, UTC) or RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.chars().take(500).collect())
}

/// A time as a datetime-local field or RFC 3339 sends it (UTC when no offset).
pub fn parse_time(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(Some(d.with_timezone(&Utc)));
    }
    for f in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Some(n.and_utc()));
        }
    }
    Err(format!(
        "bad time {t:?}: use 2026-12-07T10:00 (UTC) or RFC 3339"
    ))
}

impl FilterForm {
    pub fn to_filter(&self) -> Result<Filter, String> {
        Ok(Filter {
            id: opt(&self.id),
            function: opt(&self.function),
            queue: opt(&self.queue),
            status: opt(&self.status),
            worker: opt(&self.worker),
            source: opt(&self.source),
            from: parse_time(&self.from)?,
            to: parse_time(&self.to)?,
            error: opt(&self.error),
        })
    }

    /// The query string of the set fields (for links and the audit row).
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.query().is_empty()
    }

    /// The form's fields (inside a `<form>` the caller opens).
    pub fn fields(&self) -> Markup {
        let statuses = [
            "",
            "finished",
            "failed",
            "retried",
            "stopped",
            "given_back",
            "dropped",
        ];
        html! {
            label { "Job id" input type="text" name="id" value=(self.id); }
            label { "Function" input type="text" name="function" value=(self.function); }
            label { "Queue" input type="text" name="queue" value=(self.queue); }
            label { "Status" select name="status" {
                @for st in statuses { option value=(st) selected[self.status == st] { @if st.is_empty() { "any" } @else { (st) } } }
            } }
            label { "Worker" input type="text" name="worker" value=(self.worker); }
            label { "Source" select name="source" {
                @for st in ["", "redis", "amqp"] { option value=(st) selected[self.source == st] { @if st.is_empty() { "any" } @else { (st) } } }
            } }
            label { "From (UTC)" input type="datetime-local" name="from" value=(self.from); }
            label { "To (UTC)" input type="datetime-local" name="to" value=(self.to); }
            label { "Error text" input type="text" name="error" value=(self.error) placeholder="substring of the message"; }
        }
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(flatten)]
    pub f: FilterForm,
    /// Keyset: the last row of the previous page.
    before_at: Option<String>,
    before_id: Option<String>,
}

fn history_needed(state: &AppState, s: &Session, title: &str, hist: &HistoryState) -> Response {
    layout::page(
        state,
        Some(s),
        Page { title, history: Some(hist), ..Default::default() },
        html! { h1 { (title) } p.muted { "This page searches the history, which is off or unreachable (see above). The overview and queue pages show what Redis holds." } },
    )
    .into_response()
}

pub async fn search(
    State(state): State<AppState>,
    s: Session,
    Query(q): Query<SearchQuery>,
) -> Response {
    let hist = state.backend.history_state().await;
    let Some(h) = state.backend.usable(&hist) else {
        return history_needed(&state, &s, "Search", &hist);
    };
    let before = match (q.before_at.as_deref().map(parse_time), &q.before_id) {
        (Some(Ok(Some(at))), Some(id)) => Some((at, id.clone())),
        _ => None,
    };
    let (rows, total) = match q.f.to_filter() {
        Err(e) => (Err(e), None),
        Ok(filter) => {
            let (rows, total) = tokio::join!(h.search(&filter, PAGE, before), h.count(&filter));
            (rows.map_err(|e| e.to_string()), total.ok())
        }
    };
    let l = |p: &str| state.cfg.link(p);
    let qs = q.f.query();
    let body = html! {
        h1 { "Search the history" }
        form.filter method="get" action=(l("/search")) {
            (q.f.fields())
            div.buttons { button.primary type="submit" { "Search" } a href=(l("/search")) { "clear" } }
        }
        @match &rows {
            Err(e) => p.error { (e) },
            Ok(rows) => {
                p {
                    @if let Some(t) = total { strong #total { (t) } " attempts match. " }
                    @if s.is_operator() && !qs.is_empty() {
                        "Act on every job matching: "
                        a href=(l(&format!("/bulk?action=requeue&{qs}"))) { "requeue" } " · "
                        a href=(l(&format!("/bulk?action=cancel&{qs}"))) { "cancel" } " · "
                        a href=(l(&format!("/bulk?action=delete&{qs}"))) { "delete" } "…"
                    }
                }
                (attempt_table(&state, rows))
                @if rows.len() as i64 == PAGE {
                    @if let Some(last) = rows.last() {
                        div.pager { a href=(l(&format!("/search?{qs}{}before_at={}&before_id={}",
                            if qs.is_empty() { "" } else { "&" },
                            layout::enc(&last.ended_at.to_rfc3339()), layout::enc(&last.job_id)))) { "older →" } }
                    }
                }
            }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Search",
            history: Some(&hist),
            ..Default::default()
        },
        body,
    )
    .into_response()
}

pub fn attempt_table(state: &AppState, rows: &[crate::data::AttemptRow]) -> Markup {
    html! {
        table #results {
            thead { tr { th { "Ended" } th { "Job" } th.num { "Attempt" } th { "Status" } th { "Function" } th { "Queue" } th { "Worker" } th.num { "Run" } th { "Error" } } }
            tbody {
                @for a in rows {
                    tr {
                        td { (layout::time(Some(a.ended_at))) }
                        td { (layout::job_link(state, &a.job_id)) }
                        td.num { (a.attempt) }
                        td { (layout::status_badge(&a.status)) }
                        td.mono { (a.function) }
                        td { (a.queue) }
                        td.mono { (a.worker) }
                        td.num { (duration_ms(a.run_ms)) }
                        td { @if let Some(t) = &a.error_type { strong { (t) } " " } (a.error_message.as_deref().map(|m| m.chars().take(160).collect::<String>()).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

pub async fn errors(
    State(state): State<AppState>,
    s: Session,
    Query(f): Query<FilterForm>,
) -> Response {
    let hist = state.backend.history_state().await;
    let Some(h) = state.backend.usable(&hist) else {
        return history_needed(&state, &s, "Errors", &hist);
    };
    let groups = match f.to_filter() {
        Err(e) => Err(e),
        Ok(mut filter) => {
            filter.status = filter.status.or(Some("failed".into()));
            h.error_groups(&filter, 100)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let l = |p: &str| state.cfg.link(p);
    let body = html! {
        h1 { "Failed jobs by error" }
        form.filter method="get" action=(l("/errors")) {
            (f.fields())
            div.buttons { button.primary type="submit" { "Filter" } }
        }
        @match &groups {
            Err(e) => p.error { (e) },
            Ok(g) if g.is_empty() => p.muted { "No failure matches." },
            Ok(g) => table #groups {
                thead { tr { th { "Error" } th.num { "Attempts" } th.num { "Jobs" } th { "Last seen" } th { "Functions" } th { "" } } }
                tbody {
                    @for e in g {
                        @let q = group_filter(&f, &e.message);
                        tr {
                            td { strong { (e.error_type) } " " span.mono { (e.message) } }
                            td.num { (e.count) }
                            td.num { (e.jobs) }
                            td { (layout::time(Some(e.last_seen))) }
                            td.mono { (e.functions.join(", ")) }
                            td {
                                a href=(l(&format!("/search?{}", q.query()))) { "jobs" }
                                @if s.is_operator() { " · " a href=(l(&format!("/bulk?action=requeue&{}", q.query()))) { "requeue all…" } }
                            }
                        }
                    }
                }
            },
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Errors",
            history: Some(&hist),
            ..Default::default()
        },
        body,
    )
    .into_response()
}

/// The filter of one group's jobs: the page's filter, failed, with the group's text.
fn group_filter(f: &FilterForm, masked: &str) -> FilterForm {
    let mut q = f.clone();
    if q.status.is_empty() {
        q.status = "failed".into();
    }
    q.error = search_text(masked);
    q
}

/// The longest piece of a masked message without a mask (`#`): a substring every message
/// of the group contains, for the error-text filter.
fn search_text(masked: &str) -> String {
    masked
        .split('#')
        .map(str::trim)
        .max_by_key(|p| p.len())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
