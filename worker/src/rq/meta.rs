//! Progress reports of a running job, merged into its rq `meta` in order.

use std::sync::Mutex;
use std::time::Duration;

use mindora_sdk::wire::{self, Serializer};
use serde_json::{Map, Value};
use tracing::warn;

use super::store::RqStore;

enum MetaState {
    /// Nothing reported yet.
    Idle,
    /// Writing: updates go to the writer task.
    Writing(
        tokio::sync::mpsc::UnboundedSender<Map<String, Value>>,
        tokio::task::JoinHandle<()>,
    ),
    /// The job ended: late reports (from stray clones of the callback) are dropped.
    Closed,
}

/// Ordered, lazily started writes of one job's `meta`: the writer task (and the decoding
/// of the stored meta) is only set up on the first report, so jobs that report nothing pay
/// nothing; [`MetaWriter::flush`] waits for every write, so meta is final before the job's
/// outcome is recorded, as rq saves meta before the status.
pub struct MetaWriter {
    store: RqStore,
    hash: wire::JobHash,
    serializer: Serializer,
    runtime: tokio::runtime::Handle,
    state: Mutex<MetaState>,
}

impl MetaWriter {
    /// A writer for the job `hash` (meta encoded in `serializer`).
    pub fn new(store: RqStore, hash: &wire::JobHash, serializer: Serializer) -> Self {
        MetaWriter {
            store,
            hash: hash.clone(),
            serializer,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(MetaState::Idle),
        }
    }

    /// Queues `update` to be merged into the job's meta; never blocks.
    pub fn report(&self, update: Map<String, Value>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let MetaState::Idle = *state {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Map<String, Value>>();
            let store = self.store.clone();
            let job_id = self.hash.id.clone();
            let serializer = self.serializer;
            let mut meta = self.hash.meta(serializer);
            let task = self.runtime.spawn(async move {
                while let Some(update) = rx.recv().await {
                    meta.extend(update);
                    match serializer.dumps(&Value::Object(meta.clone())) {
                        Ok(bytes) => {
                            if let Err(e) = store.write_meta(&job_id, bytes).await {
                                warn!(error = %e, job_id = %job_id, "could not write job meta");
                            }
                        }
                        Err(e) => warn!(error = %e, job_id = %job_id, "meta is not serializable"),
                    }
                }
            });
            *state = MetaState::Writing(tx, task);
        }
        if let MetaState::Writing(tx, _) = &*state {
            let _ = tx.send(update);
        }
    }

    /// Closes the writer and waits (up to 10 s) for every pending write.
    pub async fn flush(&self) {
        let previous = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *state, MetaState::Closed)
        };
        if let MetaState::Writing(tx, task) = previous {
            drop(tx);
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                warn!(job_id = %self.hash.id, "job meta writes still pending after 10 s");
            }
        }
    }
}
