//! Bulk actions on everything matching a filter: a preview (how many jobs, a sample with
//! their status in Redis now), then a confirmation form (CSRF) that runs requeue / cancel /
//! delete on the jobs matching at that moment and shows the report. With the history the
//! filter is a history search; without it, a queue's failed registry (optionally one
//! function).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::actions::{data_error, guard, Posted};
use super::layout::{self, csrf_field, Page};
use super::search::FilterForm;
use super::session::Session;
use super::AppState;
use crate::data::actions as act;
use crate::data::redis_view;
use crate::data::{DataError, HistoryState};

/// The most jobs one bulk action touches.
pub const CAP: usize = 10_000;
const SAMPLE: usize = 20;

#[derive(Deserialize)]
pub struct BulkQuery {
    action: String,
    /// `redis`: act on the queue's failed registry as Redis holds it (the queue page's
    /// link), even with the history on: Python rq workers write no history.
    #[serde(default)]
    source_of_ids: String,
    #[serde(flatten)]
    f: FilterForm,
}

#[derive(Deserialize)]
pub struct BulkForm {
    csrf: Option<String>,
    action: String,
    #[serde(default)]
    source_of_ids: String,
    #[serde(flatten)]
    f: FilterForm,
}

fn check_action(a: &str) -> Result<&'static str, String> {
    match a {
        "requeue" => Ok("requeue"),
        "cancel" => Ok("cancel"),
        "delete" => Ok("delete"),
        _ => Err(format!(
            "unknown bulk action {a:?} (requeue, cancel, delete)"
        )),
    }
}

/// The job ids the filter matches now, and where they came from.
async fn targets(
    state: &AppState,
    f: &FilterForm,
    from_redis: bool,
) -> Result<(Vec<String>, &'static str), Result<DataError, String>> {
    let filter = f.to_filter().map_err(Err)?;
    let hist = state.backend.history_state().await;
    if let (Some(h), HistoryState::On { .. }, false) = (&state.backend.history, &hist, from_redis) {
        let ids = h.job_ids(&filter, CAP as i64).await.map_err(Ok)?;
        return Ok((ids, "history"));
    }
    let Some(queue) = filter.queue.as_deref() else {
        return Err(Err("a bulk action on Redis (no history) needs a queue: it acts on that queue's failed registry".into()));
    };
    if filter.status.as_deref().is_some_and(|s| s != "failed") {
        return Err(Err(
            "a bulk action on Redis (no history) applies to failed jobs only".into(),
        ));
    }
    let ids = redis_view::failed_ids(&state.backend.redis, queue, filter.function.as_deref(), CAP)
        .await
        .map_err(Ok)?;
    Ok((ids, "Redis failed registry"))
}

fn fail(state: &AppState, s: &Session, e: Result<DataError, String>) -> Response {
    match e {
        Ok(e) => data_error(state, s, &e),
        Err(msg) => layout::error_page(state, Some(s), StatusCode::BAD_REQUEST, &msg),
    }
}

pub async fn preview(
    State(state): State<AppState>,
    s: Session,
    Query(q): Query<BulkQuery>,
) -> Response {
    let action = match check_action(&q.action) {
        Ok(a) => a,
        Err(e) => return layout::error_page(&state, Some(&s), StatusCode::BAD_REQUEST, &e),
    };
    if q.f.is_empty() {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "a bulk action needs a filter: set at least one field",
        );
    }
    let (ids, from) = match targets(&state, &q.f, q.source_of_ids == "redis").await {
        Ok(x) => x,
        Err(e) => return fail(&state, &s, e),
    };
    let mut conn = state.backend.redis.clone();
    let sample = match redis_view::summaries(&mut conn, &ids[..ids.len().min(SAMPLE)]).await {
        Ok(x) => x,
        Err(e) => return data_error(&state, &s, &e),
    };
    let l = |p: &str| state.cfg.link(p);
    let body = html! {
        h1 { "Bulk " (action) ": preview" }
        p { "Filter: " code { (q.f.query()) } " (from the " (from) ")" }
        p.banner.info #count {
            strong { (ids.len()) @if ids.len() == CAP { "+" } } " jobs match now"
            @if ids.len() == CAP { " (one action touches at most " (CAP) ")" }
            ". Jobs not in a state the action applies to are skipped and listed."
        }
        @if !sample.is_empty() {
            h2 { "Sample (status in Redis now)" }
            table #sample {
                thead { tr { th { "Job" } th { "Status" } th { "Function" } th { "Ended" } } }
                tbody { @for j in &sample { tr {
                    td { (layout::job_link(&state, &j.id)) }
                    td { (layout::status_badge(&j.status)) }
                    td.mono { (j.function) }
                    td { (layout::time(j.ended_at)) }
                } } }
            }
        }
        @if s.is_operator() && !ids.is_empty() {
            form.confirm method="post" action=(l("/bulk")) {
                (csrf_field(&s))
                input type="hidden" name="action" value=(action);
                @if q.source_of_ids == "redis" { input type="hidden" name="source_of_ids" value="redis"; }
                @for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(&q.f.query()).unwrap_or_default() {
                    input type="hidden" name=(k) value=(v);
                }
                div.actions {
                    button.primary #confirm type="submit" { "Confirm: " (action) " " (ids.len()) " jobs" }
                    a href=(l(&format!("/search?{}", q.f.query()))) { "cancel" }
                }
            }
        } @else if !s.is_operator() {
            p.muted { "Only operators can run bulk actions." }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Bulk preview",
            ..Default::default()
        },
        body,
    )
    .into_response()
}

pub async fn run(
    State(state): State<AppState>,
    s: Session,
    Posted(form): Posted<BulkForm>,
) -> Response {
    if let Some(r) = guard(&state, &s, form.as_ref().and_then(|f| f.csrf.as_deref())) {
        return r;
    }
    let Some(form) = form else {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "the form needs an action and a filter",
        );
    };
    let action = match check_action(&form.action) {
        Ok(a) => a,
        Err(e) => return layout::error_page(&state, Some(&s), StatusCode::BAD_REQUEST, &e),
    };
    if form.f.is_empty() {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "a bulk action needs a filter",
        );
    }
    let (ids, from) = match targets(&state, &form.f, form.source_of_ids == "redis").await {
        Ok(x) => x,
        Err(e) => return fail(&state, &s, e),
    };
    let conn = &state.backend.redis;
    let report = match action {
        "requeue" => act::requeue_many(conn, &ids).await,
        "cancel" => act::cancel_many(conn, &ids).await,
        _ => act::delete_many(conn, &ids).await,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => return data_error(&state, &s, &e),
    };
    let query = form.f.query();
    let audit = state
        .backend
        .audit(
            &s,
            &format!("bulk_{action}"),
            &query,
            report.done,
            Some(json!({ "matched": ids.len(), "skipped": report.skipped.len(), "from": from })),
        )
        .await;
    let l = |p: &str| state.cfg.link(p);
    let body = html! {
        h1 { "Bulk " (action) ": done" }
        p.banner.ok #report { strong #done { (report.done) } " of " (ids.len()) " matching jobs: " (action) " done; " (report.skipped.len()) " skipped." }
        @if let Err(e) = &audit { p.banner.warn { (e) } }
        p { "Filter: " code { (query) } " · " a href=(l(&format!("/search?{query}"))) { "search again" } " · " a href=(l("/")) { "overview" } }
        @if !report.skipped.is_empty() {
            h2 { "Skipped" }
            table #skipped {
                thead { tr { th { "Job" } th { "Why" } } }
                tbody { @for (id, why) in report.skipped.iter().take(500) { tr { td { (layout::job_link(&state, id)) } td { (why) } } } }
            }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Bulk result",
            ..Default::default()
        },
        body,
    )
    .into_response()
}
