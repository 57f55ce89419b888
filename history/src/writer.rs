//! The writer: a bounded buffer the job path puts rows into without ever waiting, and one
//! background task that inserts them in batches.
//!
//! - A full buffer (PostgreSQL slow or away) drops the row and counts it
//!   ([`crate::ROWS_DROPPED`]); the count is added to this writer's `dropped` in
//!   `mindora_history_writers` with the next batch that gets through, so the console can
//!   say how much history is missing.
//! - A batch is written when `batch_max` rows are waiting or `flush_every` after its first
//!   row: one round trip each ([`crate::insert`]).
//! - PostgreSQL away: the batch is kept and retried with backoff (200 ms doubling to 30 s);
//!   the migrations run first, on the first success. A batch PostgreSQL refuses for what it
//!   holds is dropped and counted, never retried forever.
//! - Partitions are maintained once migrated and then every hour.
//! - [`WriterTask::shutdown`] flushes what is buffered within a bounded time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{insert, partitions, schema, HistoryConfig, HistoryError, Row};
use crate::{ROWS_DROPPED, ROWS_WRITTEN};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);

/// The job path's end of the history: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Row>,
    counts: Arc<Counts>,
}

/// Counters shared by the writer's handles and its task.
#[derive(Default)]
struct Counts {
    /// Dropped rows not yet added to `mindora_history_writers`.
    unreported: AtomicU64,
    /// Every row dropped since start.
    dropped: AtomicU64,
    /// Every row written since start.
    written: AtomicU64,
}

impl Counts {
    fn drop_rows(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.unreported.fetch_add(n, Ordering::Relaxed);
        self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(ROWS_DROPPED).increment(n);
    }
}

impl Writer {
    /// Hands a row to the background task; drops and counts it if the buffer is full (or
    /// the writer has stopped). Never waits.
    pub fn record(&self, row: Row) {
        match self.tx.try_send(row) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.counts.drop_rows(1);
            }
        }
    }

    /// Rows dropped since start (buffer full, refused, or not flushed in time).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Rows written since start.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }
}

/// The background task; [`WriterTask::shutdown`] ends it.
pub struct WriterTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
    counts: Arc<Counts>,
}

impl WriterTask {
    /// Writes what is buffered, for at most `within`; what is left then is dropped and
    /// counted (PostgreSQL away at shutdown is not retried).
    pub async fn shutdown(self, within: Duration) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(within, self.task).await.is_err() {
            abort.abort();
            warn!(
                secs = within.as_secs_f64(),
                "job history: the shutdown flush ran out of time; unwritten rows are lost"
            );
        }
        let dropped = self.counts.dropped.load(Ordering::Relaxed);
        let written = self.counts.written.load(Ordering::Relaxed);
        info!(written, dropped, "job history writer stopped");
    }
}

/// Starts the writer: checks the settings (the only error), then connects, migrates and
/// writes in the background, retrying for as long as PostgreSQL is away.
pub fn start(mut config: HistoryConfig) -> Result<(Writer, WriterTask), HistoryError> {
    config.validate()?;
    // The batch in hand counts as buffered: rows held in memory stay within `buffer` * 2.
    config.batch_max = config.batch_max.min(config.buffer);
    let pool = schema::pool(&config)?;
    let (tx, rx) = mpsc::channel(config.buffer);
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let task = Task {
        pool,
        config,
        rx,
        counts: counts.clone(),
        stop: stop.clone(),
        migrated: false,
        next_maintenance: Instant::now(),
        backoff: BACKOFF_MIN,
    };
    let task = tokio::spawn(task.run());
    Ok((
        Writer {
            tx,
            counts: counts.clone(),
        },
        WriterTask { stop, task, counts },
    ))
}

struct Task {
    pool: PgPool,
    config: HistoryConfig,
    rx: mpsc::Receiver<Row>,
    counts: Arc<Counts>,
    stop: CancellationToken,
    migrated: bool,
    next_maintenance: Instant,
    backoff: Duration,
}

impl Task {
    async fn run(mut self) {
        let max = self.config.batch_max;
        let mut batch: Vec<Row> = Vec::with_capacity(max);
        loop {
            // Collect: up to `max` rows, for at most `flush_every` after the first one.
            if batch.is_empty() {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    n = self.rx.recv_many(&mut batch, max) => if n == 0 { break },
                    _ = sleep(self.config.flush_every) => {}
                }
            }
            let deadline = Instant::now() + self.config.flush_every;
            while batch.len() < max {
                let room = max - batch.len();
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    n = self.rx.recv_many(&mut batch, room) => if n == 0 { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if self.stop.is_cancelled() {
                break;
            }
            let pending = self.counts.unreported.load(Ordering::Relaxed);
            let due = self.next_maintenance <= Instant::now();
            if batch.is_empty() && pending == 0 && (self.migrated && !due) {
                continue;
            }
            match self.write(&batch).await {
                Ok(()) => {
                    batch.clear();
                    self.backoff = BACKOFF_MIN;
                }
                Err(e) if e.is_transient() => {
                    warn!(error = %e, database = %schema::describe(&self.config.database_url),
                        rows = batch.len(), retry_in_ms = self.backoff.as_millis() as u64,
                        "job history: PostgreSQL unavailable; rows wait (new ones are dropped when the buffer is full)");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => {
                    warn!(error = %e, rows = batch.len(), "job history: batch refused; dropped");
                    self.counts.drop_rows(batch.len() as u64);
                    batch.clear();
                    // A refusal that repeats (e.g. the migrations) is logged with backoff.
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.flush(batch).await;
    }

    /// Migrates first if needed, maintains partitions when due, then inserts `batch` with
    /// the dropped rows not yet reported.
    async fn write(&mut self, batch: &[Row]) -> Result<(), HistoryError> {
        if !self.migrated {
            schema::migrate(&self.pool, &self.config.schema).await?;
            self.migrated = true;
            info!(schema = %self.config.schema, "job history: schema ready");
        }
        if self.next_maintenance <= Instant::now() {
            self.next_maintenance = Instant::now() + MAINTAIN_EVERY;
            match partitions::maintain(&self.pool, self.config.retention_days).await {
                Ok(done) if done.created.is_empty() && done.dropped.is_empty() => {}
                Ok(done) => {
                    info!(created = ?done.created, dropped = ?done.dropped, "job history: partitions maintained")
                }
                Err(e) => {
                    // Rows still go to DEFAULT; try again sooner than in an hour.
                    self.next_maintenance = Instant::now() + Duration::from_secs(60);
                    warn!(error = %e, "job history: partition maintenance failed");
                }
            }
        }
        let pending = self.counts.unreported.swap(0, Ordering::Relaxed);
        if batch.is_empty() && pending == 0 {
            return Ok(());
        }
        match insert::insert(&self.pool, &self.config.writer_name, batch, pending).await {
            Ok(()) => {
                let n = batch.len() as u64;
                self.counts.written.fetch_add(n, Ordering::Relaxed);
                metrics::counter!(ROWS_WRITTEN).increment(n);
                Ok(())
            }
            Err(e) => {
                self.counts.unreported.fetch_add(pending, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Shutdown: writes the batch in hand and everything buffered, one try each; what
    /// cannot be written is dropped and counted.
    async fn flush(mut self, mut batch: Vec<Row>) {
        self.rx.close();
        let max = self.config.batch_max;
        loop {
            while batch.len() < max {
                match self.rx.try_recv() {
                    Ok(row) => batch.push(row),
                    Err(_) => break,
                }
            }
            if batch.is_empty() && self.counts.unreported.load(Ordering::Relaxed) == 0 {
                return;
            }
            if let Err(e) = self.write(&batch).await {
                let mut lost = batch.len() as u64;
                while self.rx.try_recv().is_ok() {
                    lost += 1;
                }
                warn!(error = %e, lost, "job history: final flush failed");
                self.counts.drop_rows(lost);
                return;
            }
            if batch.is_empty() {
                return;
            }
            batch.clear();
        }
    }
}
