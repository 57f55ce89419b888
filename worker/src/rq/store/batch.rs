//! Group commit of successes: jobs that end close together are recorded by one call of the
//! finish script instead of one call each, so Redis pays the per-call cost (argument
//! parsing, script set-up, the worker's counters and state) once per batch.
//!
//! One task owns the calls. It sends what is waiting as soon as the previous call has
//! returned, so an idle worker's lone job is recorded at once (no timer, no added latency);
//! under load the jobs that ended while a call was in flight make up the next batch, up
//! to [`MAX_BATCH`]. Each job still gets its own reply (fencing is decided per job inside
//! the script).

use std::sync::{Arc, OnceLock};

use mindora_sdk::wire::scripts;
use mindora_sdk::RedisConn;
use tokio::sync::{mpsc, oneshot};

/// Most jobs recorded by one script call (bounds the time Redis spends in one call).
pub(crate) const MAX_BATCH: usize = 32;

/// The script's reply for one job: its status and the dependents it queued (or, for
/// `error`, the message).
pub(crate) type Reply = Result<(String, Vec<String>), redis::RedisError>;

/// One job's arguments for `finish.lua`, in the script's per-job order.
pub(crate) struct FinishArgs(pub(crate) Vec<Vec<u8>>);

struct Pending {
    args: FinishArgs,
    reply: oneshot::Sender<Reply>,
}

/// Handle on the batching task; started on first use (inside the runtime).
#[derive(Clone, Default)]
pub(crate) struct Finisher {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
}

impl Finisher {
    /// Records one job through the next batch and waits for its own reply.
    pub(crate) async fn finish(&self, conn: &RedisConn, worker: &str, args: FinishArgs) -> Reply {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(conn.clone(), worker.to_string(), rx));
            tx
        });
        let (reply, rx) = oneshot::channel();
        if tx.send(Pending { args, reply }).is_err() {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> redis::RedisError {
    (redis::ErrorKind::Client, "the finish batcher stopped").into()
}

/// Sends batches until every handle is dropped.
async fn run(mut conn: RedisConn, worker: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut inv = scripts::FINISH.prepare_invoke();
        inv.arg(&worker).arg(batch.len());
        for p in &batch {
            for a in &p.args.0 {
                inv.arg(a.as_slice());
            }
        }
        let replies: Result<Vec<(String, Vec<String>)>, _> = inv.invoke_async(&mut conn).await;
        match replies {
            Ok(rows) if rows.len() == batch.len() => {
                for (p, row) in batch.drain(..).zip(rows) {
                    let _ = p.reply.send(Ok(row));
                }
            }
            Ok(rows) => {
                let e: redis::RedisError = (
                    redis::ErrorKind::UnexpectedReturnType,
                    "finish script replied for the wrong number of jobs",
                    format!("{} replies for {} jobs", rows.len(), batch.len()),
                )
                    .into();
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
