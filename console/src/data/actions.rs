//! What an operator does to rq jobs and queues. Each job action is one atomic script of
//! `mindora_sdk::wire::scripts` (the same writes rq makes for that transition), so a job
//! is never half-moved and a worker racing the action sees one state or the other.
//!
//! The `*_many` forms act on each id on its own and report what they skipped and why; one
//! bad id never stops the rest.

use chrono::Utc;
use mindora_sdk::wire::time::{epoch_secs, utcformat};
use mindora_sdk::wire::{keys, scripts};
use mindora_sdk::RedisConn;

use super::{ActionReport, DataError};

/// What one job action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job changed.
    Done,
    /// The job is not in a state this action applies to (its status).
    NotApplicable(String),
    /// No such job (expired or deleted).
    Gone,
}

impl Outcome {
    fn reason(&self, action: &str) -> Option<String> {
        match self {
            Outcome::Done => None,
            Outcome::NotApplicable(status) => Some(format!(
                "{status}: only {} jobs can be {action}",
                applies(action)
            )),
            Outcome::Gone => Some("no such job (expired or deleted)".to_string()),
        }
    }
}

fn applies(action: &str) -> &'static str {
    match action {
        "requeued" => "failed, stopped or canceled",
        "canceled" => "queued, scheduled or deferred",
        _ => "existing",
    }
}

/// rq's `FailedJobRegistry.requeue`: a failed, stopped or canceled job goes back to the
/// tail of its queue (through its rq 3.0 rate limit when it has one).
pub async fn requeue(conn: &RedisConn, id: &str) -> Result<Outcome, DataError> {
    let mut c = conn.clone();
    let reply: String = scripts::REQUEUE_ENDED
        .prepare_invoke()
        .arg(id)
        .arg(utcformat(Utc::now()))
        .invoke_async(&mut c)
        .await?;
    Ok(match reply.as_str() {
        "requeued" => Outcome::Done,
        "gone" => Outcome::Gone,
        other => Outcome::NotApplicable(other.to_string()),
    })
}

/// rq's `Job.cancel`: a job that has not started leaves its queue or registry for the
/// canceled registry (its rate-limit slot, if any, is freed).
pub async fn cancel(conn: &RedisConn, id: &str) -> Result<Outcome, DataError> {
    let mut c = conn.clone();
    let now = Utc::now();
    let previous: String = scripts::CANCEL
        .prepare_invoke()
        .arg(id)
        .arg(epoch_secs(now))
        .arg(utcformat(now))
        .invoke_async(&mut c)
        .await?;
    Ok(match previous.as_str() {
        "gone" => Outcome::Gone,
        "finished" | "failed" | "stopped" | "canceled" | "started" => {
            Outcome::NotApplicable(previous)
        }
        _ => Outcome::Done,
    })
}

/// rq's `Job.delete`: out of its queue and every registry, hash, results and dependency
/// links deleted. A running job's worker finds its execution gone and drops its outcome.
pub async fn delete(conn: &RedisConn, id: &str) -> Result<Outcome, DataError> {
    let mut c = conn.clone();
    let previous: String = scripts::DELETE
        .prepare_invoke()
        .arg(id)
        .arg(utcformat(Utc::now()))
        .invoke_async(&mut c)
        .await?;
    Ok(if previous == "gone" {
        Outcome::Gone
    } else {
        Outcome::Done
    })
}

async fn many<F, Fut>(ids: &[String], action: &str, f: F) -> Result<ActionReport, DataError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, DataError>>,
{
    let mut report = ActionReport {
        done: 0,
        skipped: Vec::new(),
    };
    for id in ids {
        match f(id.clone()).await {
            Ok(o) => match o.reason(action) {
                None => report.done += 1,
                Some(why) => report.skipped.push((id.clone(), why)),
            },
            // Redis itself failing is not a per-job skip: stop and say so.
            Err(DataError::Redis(e)) if !is_script_error(&e) => return Err(DataError::Redis(e)),
            Err(e) => report.skipped.push((id.clone(), e.to_string())),
        }
    }
    Ok(report)
}

fn is_script_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
}

/// [`requeue`] for each id.
pub async fn requeue_many(conn: &RedisConn, ids: &[String]) -> Result<ActionReport, DataError> {
    many(
        ids,
        "requeued",
        |id| async move { requeue(conn, &id).await },
    )
    .await
}

/// [`cancel`] for each id.
pub async fn cancel_many(conn: &RedisConn, ids: &[String]) -> Result<ActionReport, DataError> {
    many(ids, "canceled", |id| async move { cancel(conn, &id).await }).await
}

/// [`delete`] for each id.
pub async fn delete_many(conn: &RedisConn, ids: &[String]) -> Result<ActionReport, DataError> {
    many(ids, "deleted", |id| async move { delete(conn, &id).await }).await
}

/// `rq suspend`: every worker, Python rq's and ours, stops taking jobs (running ones
/// finish).
pub async fn suspend(conn: &RedisConn) -> Result<(), DataError> {
    let mut c = conn.clone();
    redis::cmd("SET")
        .arg(keys::suspended())
        .arg(1)
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}

/// `rq resume`.
pub async fn resume(conn: &RedisConn) -> Result<(), DataError> {
    let mut c = conn.clone();
    redis::cmd("DEL")
        .arg(keys::suspended())
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}

/// Pauses one queue: mindora workers stop claiming from it within about a second (jobs
/// already running finish). Python rq workers do not know this key
/// (`keys::paused_queues`, mindora's own) and keep working the queue; to stop them too,
/// use [`suspend`], which stops every queue.
pub async fn pause_queue(conn: &RedisConn, queue: &str) -> Result<(), DataError> {
    let mut c = conn.clone();
    redis::cmd("SADD")
        .arg(keys::paused_queues())
        .arg(queue)
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}

/// Lifts [`pause_queue`].
pub async fn resume_queue(conn: &RedisConn, queue: &str) -> Result<(), DataError> {
    let mut c = conn.clone();
    redis::cmd("SREM")
        .arg(keys::paused_queues())
        .arg(queue)
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}
