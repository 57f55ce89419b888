//! Cron entries, rate limits, AMQP dead letters and the audit trail.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::Msg;
use crate::data::{cron, dlq, ratelimit};
use crate::web::actions::data_error;
use crate::web::layout::{self, csrf_field, enc, Page};
use crate::web::session::Session;
use crate::web::AppState;

pub async fn cron(State(state): State<AppState>, s: Session) -> Response {
    let entries = match cron::entries(&state.backend.redis).await {
        Ok(e) => e,
        Err(e) => return data_error(&state, &s, &e),
    };
    let l = |p: &str| state.cfg.link(p);
    let body = html! {
        h1 { "Cron" }
        @if entries.is_empty() {
            p.muted { "No cron scheduler has registered entries (rq's cron registry is empty)." }
        } @else {
            table #cron {
                thead { tr { th { "Entry" } th { "Function" } th { "Queue" } th { "Schedule" } th { "Last run" } th { "Next run" } th.num { "Missed" } th { "Scheduler heartbeat" } th { "" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (e.name) br; span.muted.mono { (e.scheduler) } }
                            td.mono { (e.function) }
                            td { (e.queue) }
                            td.mono { (e.schedule) }
                            td { (layout::time(e.latest)) }
                            td { (layout::time(e.next)) }
                            td.num { @if e.missed > 0 { span.badge.bad { (e.missed) } } @else { "0" } }
                            td { (layout::ago(e.scheduler_heartbeat)) }
                            td { a href=(l(&format!("/search?function={}", enc(&e.function)))) { "recent jobs" } }
                        }
                    }
                }
            }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Cron",
            refresh: Some(30),
            ..Default::default()
        },
        body,
    )
    .into_response()
}

pub async fn rate_limits(State(state): State<AppState>, s: Session) -> Response {
    let limits = match ratelimit::rate_limits(&state.backend.redis).await {
        Ok(e) => e,
        Err(e) => return data_error(&state, &s, &e),
    };
    let body = html! {
        h1 { "Rate limits" }
        @if limits.is_empty() {
            p.muted { "No rate-limit keys in Redis." }
        } @else {
            table #ratelimits {
                thead { tr { th { "Key" } th.num { "Concurrency" } th.num { "Slots in use" } th { "Held by" } th.num { "Waiting" } } }
                tbody {
                    @for r in &limits {
                        tr {
                            td.mono { (r.key) }
                            td.num { @if let Some(c) = r.concurrency { (c) } @else { "—" } }
                            td.num { (r.in_use.len()) }
                            td { @for j in &r.in_use { (layout::job_link(&state, j)) " " } }
                            td.num { (r.waiting) }
                        }
                    }
                }
            }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: "Rate limits",
            refresh: Some(30),
            ..Default::default()
        },
        body,
    )
    .into_response()
}

pub async fn dlq(State(state): State<AppState>, s: Session, Query(msg): Query<Msg>) -> Response {
    let summary = match &state.backend.amqp {
        None => None,
        Some((url, queues)) => Some(
            dlq::dlq_summary(url, queues)
                .await
                .map_err(|e| e.to_string()),
        ),
    };
    let body = html! {
        (msg.banner())
        h1 { "AMQP dead letters" }
        @match &summary {
            None => div.banner.info { "RabbitMQ is not configured (AMQP_URL and MINDORA_CONSOLE_AMQP_QUEUES)." },
            Some(Err(e)) => p.error { "RabbitMQ: " (e) },
            Some(Ok(rows)) if rows.is_empty() => p.muted { "None of the configured queues has a dead-letter queue." },
            Some(Ok(rows)) => table #dlq {
                thead { tr { th { "Dead-letter queue" } th.num { "Messages" } th { "" } } }
                tbody {
                    @for (name, count) in rows {
                        tr {
                            td.mono { (name) }
                            td.num { (count) }
                            td {
                                @if s.is_operator() && *count > 0 {
                                    @if let Some(target) = name.strip_suffix(".dlq") {
                                        form.inline method="post" action=(state.cfg.link("/dlq/requeue")) {
                                            (csrf_field(&s))
                                            input type="hidden" name="queue" value=(target);
                                            input type="number" name="limit" min="1" value=(count) aria-label="how many";
                                            " "
                                            button.primary type="submit" { "Requeue to " (target) }
                                        }
                                    }
                                }
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
            title: "Dead letters",
            ..Default::default()
        },
        body,
    )
    .into_response()
}

pub async fn audit(State(state): State<AppState>, s: Session) -> Response {
    let hist = state.backend.history_state().await;
    let rows = match (&state.backend.history, state.backend.usable(&hist)) {
        (_, Some(h)) => Some(h.recent_actions(200).await.map_err(|e| e.to_string())),
        (Some(_), None) => Some(Err("the history database is unreachable".to_string())),
        (None, None) => None,
    };
    let body = html! {
        h1 { "Audit trail" }
        @match &rows {
            None => p.muted { "The audit trail lives in the history, which is off: actions are only logged." },
            Some(Err(e)) => p.error { "History query failed: " (e) },
            Some(Ok(rows)) if rows.is_empty() => p.muted { "No action yet." },
            Some(Ok(rows)) => table #audit {
                thead { tr { th { "When" } th { "Who" } th { "Role" } th { "Action" } th { "Target" } th.num { "Jobs" } th { "Detail" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (layout::time(Some(r.at))) }
                            td { (r.username) }
                            td { (r.role) }
                            td { (r.action) }
                            td.mono { (r.target) }
                            td.num { (r.jobs) }
                            td.mono { (r.detail.as_ref().map(|d| d.to_string()).unwrap_or_default()) }
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
            title: "Audit",
            history: Some(&hist),
            ..Default::default()
        },
        body,
    )
    .into_response()
}
