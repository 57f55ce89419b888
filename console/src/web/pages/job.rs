//! A job: what Redis holds (args, kwargs, meta, result or traceback, dependencies) and the
//! timeline of every attempt from the history, with the trace link when tracing is on.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::Msg;
use crate::data::redis_view;
use crate::data::{AttemptRow, DataError, JobView};
use crate::web::layout::{self, duration_ms, enc, post_button, Page};
use crate::web::session::Session;
use crate::web::AppState;

pub async fn page(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Query(msg): Query<Msg>,
) -> Response {
    let hist = state.backend.history_state().await;
    let job = match redis_view::job(&state.backend.redis, &id).await {
        Ok(j) => Some(j),
        Err(DataError::NoSuchJob(_)) => None,
        Err(e) => return crate::web::actions::data_error(&state, &s, &e),
    };
    let timeline = match (&state.backend.history, state.backend.usable(&hist)) {
        (_, Some(h)) => h.timeline(&id).await.map_err(|e| e.to_string()),
        (Some(_), None) => Err("the history database is unreachable".to_string()),
        (None, None) => Ok(Vec::new()),
    };
    if job.is_none() && timeline.as_ref().is_ok_and(Vec::is_empty) {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::NOT_FOUND,
            &format!("job {id} is neither in Redis nor in the history"),
        );
    }
    let trace_id = job.as_ref().and_then(|j| j.trace_id.clone()).or_else(|| {
        timeline
            .as_ref()
            .ok()
            .and_then(|t| t.iter().rev().find_map(|a| a.trace_id.clone()))
    });
    let trace = trace_id.as_deref().and_then(|t| state.cfg.trace_link(t));
    let base = format!("/jobs/{}", enc(&id));
    let body = html! {
        (msg.banner())
        h1 { "Job " span.mono { (id) } }
        div.actions {
            (post_button(&state, &s, &format!("{base}/requeue"), "Requeue", "primary"))
            (post_button(&state, &s, &format!("{base}/cancel"), "Cancel", ""))
            (post_button(&state, &s, &format!("{base}/delete"), "Delete", "danger"))
            @if let Some(t) = &trace { a.button href=(t) rel="noopener" { "Trace" } }
        }
        @match &job {
            Some(j) => (summary(&state, j)),
            None => div.banner.info { "Redis no longer holds this job (its TTL ran out or it was deleted); the history below is what remains." },
        }
        h2 { "Attempts" }
        @match &timeline {
            Err(e) => p.error { "History query failed: " (e) },
            Ok(t) if t.is_empty() => p.muted {
                @if state.backend.history.is_some() { "No attempt recorded in the history yet." }
                @else { "The history is off: attempts are not recorded." }
            },
            Ok(t) => (attempts(&state, t)),
        }
        @if let Some(j) = &job { (details(j)) }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: &format!("Job {id}"),
            history: Some(&hist),
            ..Default::default()
        },
        body,
    )
    .into_response()
}

/// What Redis says about the job now.
fn summary(state: &AppState, j: &JobView) -> Markup {
    let q = |p: &str| state.cfg.link(p);
    html! {
        dl.kv #job {
            dt { "Status" } dd { (layout::status_badge(&j.status)) }
            dt { "Queue" } dd { a href=(q(&format!("/queues/{}/queued", enc(&j.queue)))) { (j.queue) } }
            dt { "Function" } dd.mono { (j.function) }
            dt { "Description" } dd.mono { (j.description) }
            dt { "Created" } dd { (layout::time(j.created_at)) }
            dt { "Enqueued" } dd { (layout::time(j.enqueued_at)) }
            dt { "Started" } dd { (layout::time(j.started_at)) }
            dt { "Ended" } dd { (layout::time(j.ended_at)) }
            dt { "Worker" } dd.mono { (j.worker_name.as_deref().unwrap_or("—")) }
            dt { "Retries left" } dd { @if let Some(r) = j.retries_left { (r) } @else { "—" } }
            dt { "Timeout" } dd { (j.timeout.as_deref().unwrap_or("—")) }
            dt { "Depends on" } dd { @for d in &j.dependency_ids { (layout::job_link(state, d)) " " } @if j.dependency_ids.is_empty() { "—" } }
            dt { "Dependents" } dd { @for d in &j.dependent_ids { (layout::job_link(state, d)) " " } @if j.dependent_ids.is_empty() { "—" } }
        }
    }
}

/// Arguments, result or traceback (below the timeline: they can be long).
fn details(j: &JobView) -> Markup {
    html! {
        h2 { "Arguments" }
        dl.kv {
            dt { "args" } dd { (layout::pre(&j.args)) }
            dt { "kwargs" } dd { (layout::pre(&j.kwargs)) }
            dt { "meta" } dd { (layout::pre(&j.meta)) }
        }
        @if let Some(r) = &j.result { h2 { "Result" } (layout::pre(r)) }
        @if let Some(e) = &j.exc_info { h2 { "Traceback" } (layout::pre(e)) }
    }
}

fn attempts(state: &AppState, rows: &[AttemptRow]) -> Markup {
    html! {
        ol.timeline #timeline {
            @for a in rows {
                li class=(a.status) data-attempt=(a.attempt) {
                    strong { "Attempt " (a.attempt) } " " (layout::status_badge(&a.status))
                    " " span.muted { (a.source) " · " (a.queue) " · " span.mono { (a.function) } }
                    dl.kv {
                        dt { "Enqueued" } dd { (layout::time(a.enqueued_at)) }
                        dt { "Waited" } dd { @if let Some(w) = a.wait_ms { (duration_ms(w)) } @else { "—" } }
                        dt { "Started" } dd { (layout::time(Some(a.started_at))) " on " span.mono { (a.worker) } }
                        dt { "Ended" } dd { (layout::time(Some(a.ended_at))) " after " (duration_ms(a.run_ms)) }
                        @if let Some(r) = a.retry_at {
                            dt { "Retry" } dd { "at " (layout::time(Some(r))) " (after " (duration_ms((r - a.ended_at).num_milliseconds().max(0))) ")" }
                        }
                        @if a.error_type.is_some() || a.error_message.is_some() {
                            dt { "Error" } dd { strong.error { (a.error_type.as_deref().unwrap_or("")) } " " (a.error_message.as_deref().unwrap_or("")) }
                        }
                        @if let Some(sum) = &a.args_summary { dt { "Args" } dd.mono { (sum) } }
                        @if let Some(t) = a.trace_id.as_deref() {
                            dt { "Trace" } dd {
                                @if let Some(link) = state.cfg.trace_link(t) { a href=(link) rel="noopener" { (t) } }
                                @else { span.mono { (t) } }
                            }
                        }
                    }
                }
            }
        }
    }
}
