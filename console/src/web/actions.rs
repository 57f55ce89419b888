//! The single actions (POST only): requeue / cancel / delete a job, suspend / resume the
//! workers, pause / resume a queue, requeue AMQP dead letters. Each checks the CSRF token
//! first, then the role, records itself in the audit trail, and redirects back with what
//! happened (`?msg=`).

use std::convert::Infallible;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, enc};
use super::session::Session;
use super::AppState;
use crate::data::actions::{self as act, Outcome};
use crate::data::{dlq, DataError};

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// A form body that never rejects: a POST without a body or with a malformed one has no
/// CSRF token, and gets the same 403 as a wrong token (not a 415 or 422 that would skip
/// the check).
pub struct Posted<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Posted<T> {
    type Rejection = Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Infallible> {
        Ok(Posted(
            Form::<T>::from_request(req, state).await.ok().map(|f| f.0),
        ))
    }
}

/// The CSRF token of a posted [`CsrfForm`].
pub fn token(f: &Option<CsrfForm>) -> Option<String> {
    f.as_ref().and_then(|f| f.csrf.clone())
}

/// The refusal, if any: CSRF first (403), then the role (403): viewers see, operators act.
pub fn guard(state: &AppState, s: &Session, csrf: Option<&str>) -> Option<Response> {
    if !s.csrf_ok(csrf) {
        return Some(layout::forbidden(state, s, "missing or wrong CSRF token"));
    }
    if !s.is_operator() {
        return Some(layout::forbidden(
            state,
            s,
            "viewers cannot act: this needs the operator role",
        ));
    }
    None
}

fn back(state: &AppState, path: &str, msg: &str) -> Response {
    Redirect::to(&format!("{}?msg={}", state.cfg.link(path), enc(msg))).into_response()
}

pub fn data_error(state: &AppState, s: &Session, e: &DataError) -> Response {
    let code = match e {
        DataError::NoSuchJob(_) => StatusCode::NOT_FOUND,
        DataError::HistoryOff | DataError::BadJob { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    tracing::warn!(user = %s.user, "data error: {e}");
    layout::error_page(state, Some(s), code, &e.to_string())
}

/// Appends the audit failure (if any) to a message.
fn with_audit(msg: String, audit: Result<(), String>) -> String {
    match audit {
        Ok(()) => msg,
        Err(e) => format!("{msg} ({e})"),
    }
}

pub async fn job_action(
    State(state): State<AppState>,
    s: Session,
    Path((id, action)): Path<(String, String)>,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    if let Some(r) = guard(&state, &s, token(&f).as_deref()) {
        return r;
    }
    let conn = &state.backend.redis;
    let outcome = match action.as_str() {
        "requeue" => act::requeue(conn, &id).await,
        "cancel" => act::cancel(conn, &id).await,
        "delete" => act::delete(conn, &id).await,
        _ => {
            return layout::error_page(
                &state,
                Some(&s),
                StatusCode::NOT_FOUND,
                "unknown action (requeue, cancel, delete)",
            )
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return data_error(&state, &s, &e),
    };
    let (jobs, msg) = match &outcome {
        Outcome::Done => (1, format!("{action}: done")),
        Outcome::NotApplicable(status) => (0, format!("{action}: not done, the job is {status}")),
        Outcome::Gone => (0, format!("{action}: not done, no such job")),
    };
    let audit = state
        .backend
        .audit(&s, &action, &id, jobs, Some(json!({ "outcome": msg })))
        .await;
    let msg = with_audit(msg, audit);
    if action == "delete" && outcome == Outcome::Done {
        return back(&state, "/", &format!("job {id} deleted"));
    }
    back(&state, &format!("/jobs/{}", enc(&id)), &msg)
}

async fn simple(
    state: AppState,
    s: Session,
    csrf: Option<String>,
    action: &str,
    target: &str,
) -> Response {
    if let Some(r) = guard(&state, &s, csrf.as_deref()) {
        return r;
    }
    let conn = &state.backend.redis;
    let done = match action {
        "suspend" => act::suspend(conn).await,
        "resume" => act::resume(conn).await,
        "pause_queue" => act::pause_queue(conn, target).await,
        _ => act::resume_queue(conn, target).await,
    };
    if let Err(e) = done {
        return data_error(&state, &s, &e);
    }
    let audit = state.backend.audit(&s, action, target, 0, None).await;
    back(
        &state,
        "/",
        &with_audit(format!("{action} {target}: done"), audit),
    )
}

pub async fn suspend(
    State(state): State<AppState>,
    s: Session,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    simple(state, s, token(&f), "suspend", "workers").await
}

pub async fn resume(
    State(state): State<AppState>,
    s: Session,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    simple(state, s, token(&f), "resume", "workers").await
}

pub async fn pause_queue(
    State(state): State<AppState>,
    s: Session,
    Path(queue): Path<String>,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    simple(state, s, token(&f), "pause_queue", &queue).await
}

pub async fn resume_queue(
    State(state): State<AppState>,
    s: Session,
    Path(queue): Path<String>,
    Posted(f): Posted<CsrfForm>,
) -> Response {
    simple(state, s, token(&f), "resume_queue", &queue).await
}

#[derive(Deserialize)]
pub struct DlqForm {
    csrf: Option<String>,
    /// The work queue whose `Q.dlq` is drained back into it.
    queue: String,
    limit: Option<u32>,
}

pub async fn dlq_requeue(
    State(state): State<AppState>,
    s: Session,
    Posted(f): Posted<DlqForm>,
) -> Response {
    if let Some(r) = guard(&state, &s, f.as_ref().and_then(|f| f.csrf.as_deref())) {
        return r;
    }
    let Some(f) = f else {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "the form needs a queue",
        );
    };
    let Some((url, queues)) = &state.backend.amqp else {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "RabbitMQ is not configured (AMQP_URL)",
        );
    };
    if !queues.contains(&f.queue) {
        return layout::error_page(
            &state,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "not one of the configured AMQP queues",
        );
    }
    let dlq_name = mindora_sdk::amqp::dlq_name(&f.queue);
    let limit = f
        .limit
        .unwrap_or(dlq::MAX_REQUEUE)
        .clamp(1, dlq::MAX_REQUEUE);
    let report = match dlq::dlq_requeue(url, &dlq_name, &f.queue, limit).await {
        Ok(r) => r,
        Err(e) => return data_error(&state, &s, &e),
    };
    let audit = state
        .backend
        .audit(
            &s,
            "dlq_requeue",
            &dlq_name,
            report.done,
            Some(json!({ "target": f.queue, "skipped": report.skipped.len() })),
        )
        .await;
    let msg = format!(
        "{} dead letters moved from {dlq_name} to {}; {} skipped",
        report.done,
        f.queue,
        report.skipped.len()
    );
    back(&state, "/dlq", &with_audit(msg, audit))
}
