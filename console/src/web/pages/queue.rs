//! One queue's list or registry, a page at a time (LRANGE / ZRANGE: no scan).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use crate::data::redis_view::{self, Registry};
use crate::web::layout::{self, enc, Page};
use crate::web::session::Session;
use crate::web::AppState;

const PAGE: u64 = 50;

#[derive(Deserialize)]
pub struct Paging {
    offset: Option<u64>,
}

pub async fn page(
    State(state): State<AppState>,
    s: Session,
    Path((queue, registry)): Path<(String, String)>,
    Query(p): Query<Paging>,
) -> Response {
    let which: Registry = match registry.parse() {
        Ok(r) => r,
        Err(e) => return layout::error_page(&state, Some(&s), StatusCode::NOT_FOUND, &e),
    };
    let offset = p.offset.unwrap_or(0);
    let (total, jobs) =
        match redis_view::queue_jobs(&state.backend.redis, &queue, which, offset, PAGE).await {
            Ok(x) => x,
            Err(e) => return crate::web::actions::data_error(&state, &s, &e),
        };
    let l = |p: &str| state.cfg.link(p);
    let here = |o: u64| {
        l(&format!(
            "/queues/{}/{}?offset={o}",
            enc(&queue),
            which.as_str()
        ))
    };
    let title = format!("{queue} · {}", which.as_str());
    let body = html! {
        h1 { "Queue " span.mono { (queue) } " · " (which.as_str()) }
        nav.actions {
            @for r in Registry::ALL {
                @if r == which { strong { (r.as_str()) } }
                @else { a href=(l(&format!("/queues/{}/{}", enc(&queue), r.as_str()))) { (r.as_str()) } }
            }
        }
        @if which == Registry::Failed && s.is_operator() && total > 0 {
            p { a.button href=(l(&format!("/bulk?action=requeue&source_of_ids=redis&queue={}&status=failed", enc(&queue)))) { "Requeue failed jobs of this queue…" } }
        }
        p.muted { (total) " jobs; showing " ((offset + 1).min(total)) "–" (offset + jobs.len() as u64) }
        table #jobs {
            thead { tr { th { "Job" } th { "Status" } th { "Function" } th { "Created" } th { "Enqueued" } th { "Ended" } th { "Worker" } } }
            tbody {
                @for j in &jobs {
                    tr {
                        td { (layout::job_link(&state, &j.id)) }
                        td { (layout::status_badge(&j.status)) }
                        td.mono { (j.function) }
                        td { (layout::time(j.created_at)) }
                        td { (layout::time(j.enqueued_at)) }
                        td { (layout::time(j.ended_at)) }
                        td.mono { (j.worker_name.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        div.pager {
            @if offset > 0 { a href=(here(offset.saturating_sub(PAGE))) { "← newer / earlier" } }
            @if offset + PAGE < total { a href=(here(offset + PAGE)) { "more →" } }
        }
    };
    layout::page(
        &state,
        Some(&s),
        Page {
            title: &title,
            ..Default::default()
        },
        body,
    )
    .into_response()
}
