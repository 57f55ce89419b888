//! The worker loop for rq queues, spelled out:
//!
//! 1. **Claim**: one script call pops up to as many jobs as there are free slots, in strict
//!    queue (lane) order, and starts them atomically. When the queues are empty, a blocking
//!    `BLMOVE` into rq's intermediate list waits for the next job, so no pop is ever lost.
//! 2. **Run**: each job runs as its own task under its timeout; panics, timeouts, stop
//!    commands and shutdown are caught there, never in the loop.
//! 3. **Record**: success, retry (rq's `Retry` or a queue's exponential default),
//!    dead-letter (failed registry) or stop is recorded by one script call, retried until
//!    Redis takes it.
//! 4. **Around it**: a heartbeat keeps the worker and its executions alive; maintenance
//!    moves scheduled jobs (under rq's scheduler lock) and recovers jobs of dead workers;
//!    a pub/sub listener obeys `rq`'s shutdown / stop-job / kill-horse commands.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mindora_sdk::wire::retry::rq_interval;
use mindora_sdk::wire::{self, keys, Serializer};
use redis::aio::ConnectionManager;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::RetryDefaults;
use crate::handler::{HandlerError, JobContext, ProgressFn, Registry};
use crate::metrics::{self as m, Health};
use crate::rq_store::{Claimed, FailMode, RqStore};

/// rq's job monitoring interval: executions are considered abandoned this long plus 60 s
/// after their last heartbeat.
const MONITOR_INTERVAL_SECS: i64 = 30;

/// Settings of the Redis loop.
#[derive(Debug, Clone)]
pub struct RedisLoopConfig {
    /// Queues in priority order.
    pub queues: Vec<String>,
    /// Jobs at once.
    pub concurrency: usize,
    /// Exit when idle.
    pub burst: bool,
    /// Grace for running jobs at shutdown.
    pub shutdown_grace: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Abandoned-job recovery period.
    pub recover_every: Duration,
    /// Grace past the heartbeat window before a running job counts as abandoned.
    pub abandon_grace_secs: i64,
    /// Default retry policies.
    pub retry_defaults: RetryDefaults,
}

/// Why a running job was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// `rq`'s stop-job / kill-horse command.
    Stop,
    /// Shutdown grace ran out: give the job back to its queue.
    Requeue,
}

struct Running {
    job_id: String,
    queue: String,
    exec_id: String,
    timeout_secs: i64,
    started: Instant,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<Interrupt>>>,
}

/// One worker process's rq side.
pub struct RedisWorker {
    cfg: RedisLoopConfig,
    registry: Arc<Registry>,
    store: RqStore,
    blocking: ConnectionManager,
    redis_url: String,
    running: Mutex<HashMap<String, Running>>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    health: Arc<Health>,
    version: String,
}

impl RedisWorker {
    /// Builds the worker; `blocking` must be a connection of its own (blocking pops stall
    /// every other command on a connection).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: RedisLoopConfig,
        registry: Arc<Registry>,
        store: RqStore,
        blocking: ConnectionManager,
        redis_url: String,
        shutdown: CancellationToken,
        health: Arc<Health>,
        version: String,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        Arc::new(RedisWorker {
            cfg,
            registry,
            store,
            blocking,
            redis_url,
            running: Mutex::new(HashMap::new()),
            slots,
            shutdown,
            health,
            version,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still
        // consistent (single inserts/removes), so keep going.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until shutdown (or, in burst mode, until idle); then drains and unregisters.
    pub async fn run(self: Arc<Self>) {
        let queues = self.cfg.queues.clone();
        let mut backoff = Backoff::default();
        while let Err(e) = self.store.register_birth(&queues, &self.version).await {
            warn!(error = %e, "cannot register with Redis yet; retrying");
            if self.shutdown.is_cancelled() {
                return;
            }
            backoff.wait().await;
        }
        self.health.redis_ok();
        self.health.started.store(true, Ordering::Relaxed);
        info!(worker = self.store.worker(), queues = ?queues, concurrency = self.cfg.concurrency, "worker started");
        metrics::gauge!(m::WORKER_INFO, "name" => self.store.worker().to_string(), "version" => self.version.clone()).set(1.0);
        metrics::gauge!(m::WORKER_CONCURRENCY).set(self.cfg.concurrency as f64);
        metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => "redis").set(0.0);
        metrics::counter!(m::REDIS_RECONNECTS).absolute(0);

        let background = CancellationToken::new();
        let hb = tokio::spawn(self.clone().heartbeat_loop(background.clone()));
        let mt = tokio::spawn(self.clone().maintenance_loop(background.clone()));
        let ps = tokio::spawn(self.clone().command_loop(background.clone()));

        self.clone().fetch_loop().await;

        self.health.stopping.store(true, Ordering::Relaxed);
        self.drain().await;
        background.cancel();
        let _ = tokio::join!(hb, mt, ps);
        if let Err(e) = self.store.release_scheduler_locks(&queues).await {
            warn!(error = %e, "could not release scheduler locks (they expire by themselves)");
        }
        if let Err(e) = self.store.register_death(&queues).await {
            warn!(error = %e, "could not unregister (the worker key expires by itself)");
        }
        info!(worker = self.store.worker(), "worker stopped");
    }

    async fn fetch_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut failing = false;
        let mut suspended_checked = Instant::now() - Duration::from_secs(10);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if suspended_checked.elapsed() > Duration::from_secs(1) {
                suspended_checked = Instant::now();
                if let Ok(true) = self.store.suspended().await {
                    let _ = self.store.set_state("suspended", None).await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                        _ = self.shutdown.cancelled() => {},
                    }
                    continue;
                }
            }
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = self.shutdown.cancelled() => break,
            };
            let want = 1 + self.slots.available_permits();
            match self
                .store
                .claim(
                    &self.cfg.queues,
                    want,
                    MONITOR_INTERVAL_SECS,
                    self.cfg.abandon_grace_secs,
                    None,
                )
                .await
            {
                Ok(jobs) if !jobs.is_empty() => {
                    if failing {
                        failing = false;
                        metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                        info!("Redis is back");
                    }
                    backoff.reset();
                    self.health.redis_ok();
                    self.spawn_jobs(jobs, first);
                }
                Ok(_) => {
                    drop(first);
                    self.health.redis_ok();
                    if failing {
                        failing = false;
                        metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                        info!("Redis is back");
                    }
                    if self.cfg.burst {
                        if self.idle_in_burst().await {
                            info!("burst mode: queues empty, nothing running; exiting");
                            break;
                        }
                        continue;
                    }
                    self.wait_for_job().await;
                }
                Err(e) => {
                    drop(first);
                    if !failing {
                        error!(error = %e, "cannot claim jobs; Redis unreachable? retrying with backoff");
                    }
                    failing = true;
                    tokio::select! {
                        _ = backoff.wait() => {},
                        _ = self.shutdown.cancelled() => {},
                    }
                }
            }
        }
    }

    /// Burst mode: true when nothing runs and a fresh sweep finds nothing.
    async fn idle_in_burst(self: &Arc<Self>) -> bool {
        let all = self.cfg.concurrency.max(1) as u32;
        // Wait for running jobs: they may enqueue dependents or retries.
        let Ok(permits) = self.slots.clone().acquire_many_owned(all).await else {
            return true;
        };
        drop(permits);
        match self
            .store
            .claim(
                &self.cfg.queues,
                1,
                MONITOR_INTERVAL_SECS,
                self.cfg.abandon_grace_secs,
                None,
            )
            .await
        {
            Ok(jobs) if jobs.is_empty() => true,
            Ok(jobs) => match self.slots.clone().acquire_owned().await {
                Ok(p) => {
                    self.spawn_jobs(jobs, p);
                    false
                }
                Err(_) => true,
            },
            Err(_) => false,
        }
    }

    /// Blocks until the next job arrives, then claims it. The pop is always a `BLMOVE`
    /// into rq's intermediate list, so a worker killed between pop and claim loses nothing
    /// (recovery puts stranded ids back). One queue: block up to a second on it. Several:
    /// block up to 100 ms on the highest lane; the fetch loop's atomic sweep then takes the
    /// lower lanes, so they wait at most ~100 ms while the worker is idle. (rq's own worker
    /// uses `BLPOP` across several queues, which can lose a job popped by a dying worker.)
    async fn wait_for_job(self: &Arc<Self>) {
        let mut conn = self.blocking.clone();
        let queues = &self.cfg.queues;
        let lane = &queues[0];
        let timeout = if queues.len() == 1 { 1.0 } else { 0.1 };
        let got: Result<Option<(String, String)>, redis::RedisError> = redis::cmd("BLMOVE")
            .arg(keys::queue(lane))
            .arg(keys::intermediate(lane))
            .arg("LEFT")
            .arg("RIGHT")
            .arg(timeout)
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|id| id.map(|id| (lane.clone(), id)));
        match got {
            Ok(Some((queue, id))) => {
                let permit = match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let mut attempts = 0;
                loop {
                    match self
                        .store
                        .claim(
                            std::slice::from_ref(&queue),
                            1,
                            MONITOR_INTERVAL_SECS,
                            self.cfg.abandon_grace_secs,
                            Some(&id),
                        )
                        .await
                    {
                        Ok(jobs) => {
                            self.spawn_jobs(jobs, permit);
                            return;
                        }
                        Err(e) if attempts < 50 => {
                            attempts += 1;
                            warn!(error = %e, job_id = %id, "claim after blocking pop failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
                        }
                        Err(e) => {
                            error!(error = %e, job_id = %id, "giving up claiming a popped job; recovery will requeue it if it is in the intermediate list");
                            return;
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "blocking pop failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn spawn_jobs(self: &Arc<Self>, jobs: Vec<Claimed>, first: OwnedSemaphorePermit) {
        let mut first = Some(first);
        for job in jobs {
            let permit = first
                .take()
                .or_else(|| self.slots.clone().try_acquire_owned().ok());
            let this = self.clone();
            let span = tracing::info_span!("job", job_id = %job.job_id, queue = %job.queue);
            tokio::spawn(
                async move {
                    this.execute(job).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    async fn execute(self: Arc<Self>, job: Claimed) {
        let queue = job.queue.clone();
        let (serializer, call) = match job.hash.call() {
            Ok(decoded) => decoded,
            Err(e) => {
                let err = HandlerError::permanent(
                    "DeserializationError",
                    format!("cannot decode job data: {e}"),
                );
                metrics::counter!(m::JOBS_STARTED, "source" => "redis", "queue" => queue.clone(), "function" => "<undecodable>").increment(1);
                self.record_failure(&job, "<undecodable>", err, None, Duration::ZERO)
                    .await;
                return;
            }
        };
        let function = call.function.clone();
        for callback in [
            wire::job::field::SUCCESS_CALLBACK_NAME,
            wire::job::field::FAILURE_CALLBACK_NAME,
            wire::job::field::STOPPED_CALLBACK_NAME,
        ] {
            if let Some(name) = job.hash.text(callback) {
                warn!(
                    callback,
                    name, "rq callbacks name Python functions; mindora-worker does not run them"
                );
            }
        }
        metrics::counter!(m::JOBS_STARTED, "source" => "redis", "queue" => queue.clone(), "function" => function.clone()).increment(1);
        let Some(handler) = self.registry.get(&function) else {
            let err = self.registry.unknown(&function);
            self.record_failure(&job, &function, err, None, Duration::ZERO)
                .await;
            return;
        };
        let timeout_secs = job
            .hash
            .timeout_secs()
            .unwrap_or(wire::DEFAULT_JOB_TIMEOUT_SECS);
        let stop = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        self.running().insert(
            job.exec_id.clone(),
            Running {
                job_id: job.job_id.clone(),
                queue: queue.clone(),
                exec_id: job.exec_id.clone(),
                timeout_secs,
                started: Instant::now(),
                stop: stop.clone(),
                reason: reason.clone(),
            },
        );
        metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => "redis").increment(1.0);
        info!(function = %function, "job started");

        let attempt = attempt_number(&job);
        let meta_writer = self.progress_writer(&job, serializer);
        let progress: ProgressFn = {
            let w = meta_writer.clone();
            Arc::new(move |update| w.report(update))
        };
        let ctx = JobContext::new(
            job.job_id.clone(),
            queue.clone(),
            "redis",
            function.clone(),
            call.args,
            call.kwargs,
            attempt,
            Some(progress),
        );
        let started = Instant::now();
        let task = tokio::spawn(handler.call(ctx));
        let abort = task.abort_handle();
        let limit = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let outcome: Result<Value, (HandlerError, Option<Interrupt>)> = tokio::select! {
            joined = async {
                match limit {
                    Some(l) => tokio::time::timeout(l, task).await.ok(),
                    None => Some(task.await),
                }
            } => match joined {
                Some(Ok(Ok(v))) => Ok(v),
                Some(Ok(Err(e))) => Err((e, None)),
                Some(Err(join)) => Err((HandlerError::retryable("HandlerPanic", format!("handler panicked: {}", panic_message(join))), None)),
                None => {
                    abort.abort();
                    Err((HandlerError::retryable("JobTimeoutException", format!("Task exceeded maximum timeout value ({timeout_secs} seconds)")), None))
                }
            },
            _ = stop.cancelled() => {
                abort.abort();
                let why = *reason.lock().unwrap_or_else(|p| p.into_inner());
                Err((HandlerError::permanent("StopRequested", "job stopped by request"), why))
            }
        };
        let elapsed = started.elapsed();
        meta_writer.flush().await;
        metrics::histogram!(m::JOB_DURATION, "source" => "redis", "queue" => queue.clone(), "function" => function.clone()).record(elapsed.as_secs_f64());
        match outcome {
            Ok(value) => {
                self.record_success(&job, serializer, &value).await;
                metrics::counter!(m::JOBS_FINISHED, "source" => "redis", "queue" => queue.clone(), "function" => function.clone()).increment(1);
                info!(function = %function, ms = elapsed.as_millis() as u64, "job finished");
            }
            Err((err, interrupt)) => {
                self.record_failure(&job, &function, err, interrupt, elapsed)
                    .await;
            }
        }
        self.running().remove(&job.exec_id);
        metrics::gauge!(m::JOBS_IN_FLIGHT, "source" => "redis").decrement(1.0);
    }

    /// A writer that merges progress into the job's `meta`, in order, on one task. The task
    /// (and the decoding of the stored meta) is only set up on the first report, so jobs that
    /// report nothing pay nothing; [`MetaWriter::flush`] waits for every write, so meta is
    /// final before the job's outcome is recorded, as rq saves meta before the status.
    fn progress_writer(&self, job: &Claimed, serializer: Serializer) -> Arc<MetaWriter> {
        Arc::new(MetaWriter {
            store: self.store.clone(),
            hash: job.hash.clone(),
            serializer,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(MetaState::Idle),
        })
    }

    async fn record_success(&self, job: &Claimed, serializer: Serializer, value: &Value) {
        let mut backoff = Backoff::default();
        loop {
            match self.store.finish(job, serializer, value).await {
                Ok(moved) => {
                    if !moved.is_empty() {
                        debug!(dependents = ?moved, "enqueued dependents");
                    }
                    return;
                }
                Err(crate::rq_store::FinishError::Codec(e)) => {
                    let err = HandlerError::permanent(
                        "SerializationError",
                        format!("return value cannot be serialized: {e}"),
                    );
                    self.record_failure(job, "<result>", err, None, Duration::ZERO)
                        .await;
                    return;
                }
                Err(e) => {
                    if backoff.attempts() >= 120 {
                        error!(error = %e, "could not record success; the job will be recovered as abandoned");
                        return;
                    }
                    warn!(error = %e, "could not record success yet; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn record_failure(
        &self,
        job: &Claimed,
        function: &str,
        err: HandlerError,
        interrupt: Option<Interrupt>,
        elapsed: Duration,
    ) {
        let queue = job.queue.clone();
        let labels = [
            ("source", "redis".to_string()),
            ("queue", queue.clone()),
            ("function", function.to_string()),
        ];
        if interrupt == Some(Interrupt::Requeue) {
            // Shutdown grace ran out: back to the queue, no attempt spent.
            self.requeue(job).await;
            return;
        }
        metrics::counter!(m::JOBS_FAILED, &labels).increment(1);
        let mode = if interrupt == Some(Interrupt::Stop) {
            FailMode::Stopped
        } else {
            self.failure_mode(job, &err).await
        };
        let exc = format!(
            "Traceback (most recent call last):\n  mindora-worker {} running {function} on queue {queue} (job {}, {:.3}s)\n{}: {}\n",
            self.store.worker(),
            job.job_id,
            elapsed.as_secs_f64(),
            err.kind,
            err.message
        );
        let mut backoff = Backoff::default();
        loop {
            match self.store.fail(job, mode, &exc).await {
                Ok(status) => {
                    match mode {
                        FailMode::Retry { delay_secs } => {
                            metrics::counter!(m::JOBS_RETRIED, &labels).increment(1);
                            warn!(function, error = %err, delay_secs, status = %status, "job failed; retrying");
                        }
                        FailMode::Failed => {
                            metrics::counter!(m::JOBS_DEAD_LETTERED, &labels).increment(1);
                            error!(function, error = %err, "job failed; moved to the failed registry");
                        }
                        FailMode::Stopped => warn!(function, "job stopped"),
                    }
                    return;
                }
                Err(e) => {
                    if backoff.attempts() >= 120 {
                        error!(error = %e, "could not record failure; the job will be recovered as abandoned");
                        return;
                    }
                    warn!(error = %e, "could not record failure yet; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// rq's retry rules, plus the queue's default exponential policy for jobs without one.
    async fn failure_mode(&self, job: &Claimed, err: &HandlerError) -> FailMode {
        if !err.retryable {
            return FailMode::Failed;
        }
        match job.hash.retries_left() {
            Some(left) if left > 0 => {
                let delay = match job.hash.mindora_retry() {
                    Some(policy) => policy.delay_secs(left),
                    None => {
                        rq_interval(&job.hash.retry_intervals().unwrap_or_default(), left) as f64
                    }
                };
                FailMode::Retry {
                    delay_secs: delay.ceil() as i64,
                }
            }
            Some(_) => FailMode::Failed,
            None => match self.cfg.retry_defaults.for_queue(&job.queue) {
                Some(policy) if policy.retries() > 0 => {
                    match self.store.adopt_retry_policy(&job.job_id, policy).await {
                        Ok(()) => FailMode::Retry {
                            delay_secs: policy.delay_secs(i64::from(policy.retries())).ceil()
                                as i64,
                        },
                        Err(e) => {
                            warn!(error = %e, "could not attach the default retry policy");
                            FailMode::Failed
                        }
                    }
                }
                _ => FailMode::Failed,
            },
        }
    }

    async fn requeue(&self, job: &Claimed) {
        let mut conn = self.store.connection();
        let composite = keys::execution_composite(&job.job_id, &job.exec_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys::execution(&job.job_id, &job.exec_id))
            .zrem(keys::started(&job.queue), &composite)
            .zrem(keys::executions(&job.job_id), &job.exec_id)
            .srem(keys::worker_executions(self.store.worker()), &composite)
            .hset(keys::job(&job.job_id), "status", "queued")
            .lpush(keys::queue(&job.queue), &job.job_id);
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                warn!(job_id = %job.job_id, "shutdown grace expired; job returned to the head of its queue")
            }
            Err(e) => {
                error!(error = %e, job_id = %job.job_id, "could not requeue at shutdown; recovery will handle it")
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut last_state = String::new();
        loop {
            // One pass over the running jobs: what to heartbeat, and the oldest as current_job.
            let (running, current) = {
                let map = self.running();
                let current = map
                    .values()
                    .min_by_key(|r| r.started)
                    .map(|r| r.job_id.clone());
                let running: Vec<(String, String, String, i64)> = map
                    .values()
                    .map(|r| {
                        let remaining = if r.timeout_secs > 0 {
                            (r.timeout_secs - r.started.elapsed().as_secs() as i64).max(0)
                        } else {
                            MONITOR_INTERVAL_SECS
                        };
                        (
                            r.job_id.clone(),
                            r.queue.clone(),
                            r.exec_id.clone(),
                            remaining.min(MONITOR_INTERVAL_SECS) + self.cfg.abandon_grace_secs,
                        )
                    })
                    .collect();
                (running, current)
            };
            match self
                .store
                .heartbeat(&running, wire::WORKER_TTL_SECS + 60)
                .await
            {
                Ok(true) => self.health.redis_ok(),
                Ok(false) => {
                    warn!("worker registration lost (Redis restarted?); registering again");
                    match self
                        .store
                        .register_birth(&self.cfg.queues, &self.version)
                        .await
                    {
                        Ok(()) => {
                            last_state.clear();
                            let _ = self
                                .store
                                .heartbeat(&running, wire::WORKER_TTL_SECS + 60)
                                .await;
                        }
                        Err(e) => warn!(error = %e, "registering again failed"),
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat failed"),
            }
            let state = if current.is_some() { "busy" } else { "idle" };
            let key = format!("{state}:{current:?}");
            if key != last_state
                && self
                    .store
                    .set_state(state, current.as_deref())
                    .await
                    .is_ok()
            {
                last_state = key;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.heartbeat) => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn maintenance_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut last_recover = Instant::now() - self.cfg.recover_every;
        let mut last_stats = Instant::now() - Duration::from_secs(60);
        loop {
            for q in &self.cfg.queues {
                match self.store.run_scheduler(q, 61).await {
                    Ok(n) if n > 0 => debug!(queue = %q, moved = n, "scheduled jobs enqueued"),
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "scheduler pass failed"),
                }
            }
            if last_recover.elapsed() >= self.cfg.recover_every {
                last_recover = Instant::now();
                for q in &self.cfg.queues {
                    match self
                        .store
                        .recover_abandoned(q, self.cfg.recover_every.as_secs().max(1))
                        .await
                    {
                        Ok(done) => {
                            for (job_id, status) in done {
                                warn!(job_id = %job_id, queue = %q, status = %status, "recovered a job abandoned by a dead worker");
                                if status == "failed" {
                                    metrics::counter!(m::JOBS_DEAD_LETTERED, "source" => "redis", "queue" => q.clone(), "function" => "<abandoned>").increment(1);
                                } else {
                                    metrics::counter!(m::JOBS_RETRIED, "source" => "redis", "queue" => q.clone(), "function" => "<abandoned>").increment(1);
                                }
                            }
                        }
                        Err(e) => debug!(error = %e, "recovery pass failed"),
                    }
                }
            }
            if last_stats.elapsed() >= Duration::from_secs(5) {
                last_stats = Instant::now();
                if let Ok(stats) = self.store.queue_stats(&self.cfg.queues).await {
                    for (q, depth, age) in stats {
                        metrics::gauge!(m::QUEUE_DEPTH, "source" => "redis", "queue" => q.clone())
                            .set(depth as f64);
                        metrics::gauge!(m::QUEUE_OLDEST_AGE, "source" => "redis", "queue" => q)
                            .set(age);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Obeys `rq.command.send_shutdown_command`, `send_stop_job_command`,
    /// `send_kill_horse_command` published on `rq:pubsub:<worker>`.
    async fn command_loop(self: Arc<Self>, stop: CancellationToken) {
        let channel = keys::worker_pubsub(self.store.worker());
        let mut backoff = Backoff::default();
        loop {
            let session = async {
                let client = redis::Client::open(self.redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                backoff.reset();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    self.handle_command(&payload);
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = session => if let Err(e) = r { debug!(error = %e, "command channel lost; resubscribing") },
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = backoff.wait() => {},
                _ = stop.cancelled() => return,
            }
        }
    }

    fn handle_command(&self, payload: &str) {
        let Ok(cmd) = serde_json::from_str::<Value>(payload) else {
            warn!(payload, "ignoring malformed command");
            return;
        };
        match cmd.get("command").and_then(Value::as_str) {
            Some("shutdown") => {
                info!("shutdown command received");
                self.shutdown.cancel();
            }
            Some("stop-job") => {
                let Some(job_id) = cmd.get("job_id").and_then(Value::as_str) else {
                    return;
                };
                for r in self.running().values().filter(|r| r.job_id == job_id) {
                    info!(job_id, "stop-job command received");
                    *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(Interrupt::Stop);
                    r.stop.cancel();
                }
            }
            Some("kill-horse") => {
                for r in self.running().values() {
                    *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(Interrupt::Stop);
                    r.stop.cancel();
                }
            }
            other => warn!(command = ?other, "ignoring unknown command"),
        }
    }

    /// Lets running jobs finish within the grace period, then requeues the rest.
    async fn drain(&self) {
        let all = self.cfg.concurrency.max(1) as u32;
        let waited = tokio::time::timeout(
            self.cfg.shutdown_grace,
            self.slots.clone().acquire_many_owned(all),
        )
        .await;
        if waited.is_ok() {
            return;
        }
        let interrupted: Vec<String> = self
            .running()
            .values()
            .map(|r| {
                *r.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(Interrupt::Requeue);
                r.stop.cancel();
                r.job_id.clone()
            })
            .collect();
        warn!(jobs = ?interrupted, "shutdown grace expired; requeueing running jobs");
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.slots.clone().acquire_many_owned(all),
        )
        .await;
    }
}

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

/// Ordered, lazily started writes of one job's `meta`.
struct MetaWriter {
    store: RqStore,
    hash: wire::JobHash,
    serializer: Serializer,
    runtime: tokio::runtime::Handle,
    state: Mutex<MetaState>,
}

impl MetaWriter {
    fn report(&self, update: Map<String, Value>) {
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
    async fn flush(&self) {
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

/// Attempt = retries used + 1. rq's `Retry` stores no total, so only jobs with mindora's
/// policy know theirs; other jobs report attempt 1.
fn attempt_number(job: &Claimed) -> u32 {
    match (job.hash.mindora_retry(), job.hash.retries_left()) {
        (Some(policy), Some(left)) => (i64::from(policy.retries()) - left).max(0) as u32 + 1,
        _ => 1,
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Exponential backoff with a cap, for reconnect loops.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// Sleeps 50 ms, 100 ms, ... up to 5 s.
    pub async fn wait(&mut self) {
        let ms = 50u64.saturating_mul(1 << self.attempts.min(7)).min(5000);
        self.attempts += 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    /// Back to the shortest pause.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
    /// Pauses taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}
