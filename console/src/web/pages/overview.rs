//! The overview: every queue's counts (linked to its lists), the workers, suspend and
//! per-queue pause for operators, and the 72 h charts per function from the history.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;

use super::Msg;
use crate::data::redis_view::{self, Registry};
use crate::data::{HistoryState, QueueCounts};
use crate::web::layout::{self, enc, post_button, Page};
use crate::web::session::Session;
use crate::web::{charts, AppState};

fn count(q: &QueueCounts, r: Registry) -> u64 {
    match r {
        Registry::Queued => q.queued,
        Registry::Started => q.started,
        Registry::Scheduled => q.scheduled,
        Registry::Deferred => q.deferred,
        Registry::Failed => q.failed,
        Registry::Finished => q.finished,
        Registry::Canceled => q.canceled,
    }
}

pub async fn page(State(state): State<AppState>, s: Session, Query(msg): Query<Msg>) -> Response {
    let (ov, hist) = tokio::join!(
        redis_view::overview(&state.backend.redis),
        state.backend.history_state()
    );
    let ov = match ov {
        Ok(o) => o,
        Err(e) => return crate::web::actions::data_error(&state, &s, &e),
    };
    let stats = match (&state.backend.history, &hist) {
        (Some(h), HistoryState::On { .. }) => {
            match h.hourly(Utc::now() - chrono::Duration::hours(72)).await {
                Ok(rows) => Ok(rows),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => Ok(Vec::new()),
    };
    let l = |p: &str| state.cfg.link(p);
    let body = html! {
        (msg.banner())
        h1 { "Overview" }
        @if ov.suspended {
            div.banner.warn { "Workers are suspended (rq suspend): no new jobs start." }
        }
        div.actions {
            @if ov.suspended {
                (post_button(&state, &s, "/resume", "Resume workers", "primary"))
            } @else {
                (post_button(&state, &s, "/suspend", "Suspend workers", "danger"))
            }
        }
        h2 { "Queues" }
        @if ov.queues.is_empty() {
            p.muted { "No queues in Redis yet." }
        } @else {
            table #queues {
                thead { tr {
                    th { "Queue" }
                    @for r in Registry::ALL { th.num { (r.as_str()) } }
                    th { "" }
                } }
                tbody {
                    @for q in &ov.queues {
                        tr data-queue=(q.name) {
                            td {
                                a href=(l(&format!("/queues/{}/queued", enc(&q.name)))) { (q.name) }
                                @if q.paused { " " span.badge.warn { "paused" } }
                            }
                            @for r in Registry::ALL {
                                td.num data-registry=(r.as_str()) {
                                    a href=(l(&format!("/queues/{}/{}", enc(&q.name), r.as_str()))) { (count(q, r)) }
                                }
                            }
                            td {
                                @if q.paused {
                                    (post_button(&state, &s, &format!("/queues/{}/resume", enc(&q.name)), "Resume", ""))
                                } @else {
                                    (post_button(&state, &s, &format!("/queues/{}/pause", enc(&q.name)), "Pause", ""))
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Workers (" (ov.workers.len()) ")" }
        @if ov.workers.is_empty() {
            p.muted { "No worker registered." }
        } @else {
            table #workers {
                thead { tr {
                    th { "Name" } th { "State" } th { "Queues" } th { "Current jobs" }
                    th { "Last heartbeat" } th { "Version" } th { "Host / pid" }
                    th.num { "OK" } th.num { "Failed" }
                } }
                tbody {
                    @for w in &ov.workers {
                        tr {
                            td.mono { (w.name) }
                            td { (layout::status_badge(&w.state)) }
                            td { (w.queues.join(", ")) }
                            td { @for j in &w.current_jobs { (layout::job_link(&state, j)) " " } }
                            td { (layout::ago(w.last_heartbeat)) }
                            td { (w.version) }
                            td { (w.hostname) @if let Some(p) = w.pid { " / " (p) } }
                            td.num { (w.successful_jobs) }
                            td.num { (w.failed_jobs) }
                        }
                    }
                }
            }
        }
        h2 { "Last 72 hours per function" }
        @match &stats {
            Err(e) => p.error { "History query failed: " (e) },
            Ok(rows) if rows.is_empty() => p.muted {
                @if matches!(hist, HistoryState::On { .. }) { "No executions in the history in the last 72 h." }
                @else { "Charts need the history." }
            },
            Ok(rows) => (charts::per_function(rows, Utc::now())),
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Overview",
            refresh: Some(10),
            history: Some(&hist),
        },
        body,
    )
    .into_response()
}
