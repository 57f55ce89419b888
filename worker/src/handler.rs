//! Handlers: the functions a worker can run, registered by the dotted name Python code
//! enqueues (`q.enqueue("mindora.echo", ...)`). A job naming no registered handler goes to
//! the registry's fallback handler when one is set (e.g. a Python process pool), else it
//! fails with the list of names this worker serves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mindora_sdk::wire::Serializer;
use serde_json::{Map, Value};

/// Boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Output, HandlerError>> + Send>>;

/// What a handler returns on success.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A value the worker serializes in the job's serializer (rq) or as JSON (AMQP).
    Value(Value),
    /// A return value already serialized in the job's serializer ([`RawJob::serializer`]),
    /// stored as is for rq jobs (e.g. a pickle produced by a Python process). AMQP replies
    /// carry it parsed as JSON, or as a string when it is not JSON.
    Serialized(Vec<u8>),
}

impl From<Value> for Output {
    fn from(v: Value) -> Self {
        Output::Value(v)
    }
}

/// The job as its source stored it, for handlers that run it elsewhere (a process pool)
/// and need the exact bytes.
#[derive(Debug, Clone)]
pub struct RawJob {
    /// The job's `data` field (rq: compressed call tuple) or the AMQP message body.
    pub data: Vec<u8>,
    /// The serializer detected from `data` (rq jobs); `None` for AMQP (JSON envelope).
    pub serializer: Option<Serializer>,
    /// rq's `description` field, when set.
    pub description: Option<String>,
    /// The time limit the worker enforces on this execution, if any.
    pub timeout: Option<std::time::Duration>,
}

/// Receives progress updates; the Redis source merges them into the rq job's `meta`.
pub type ProgressFn = Arc<dyn Fn(Map<String, Value>) + Send + Sync>;

/// What a handler is given for one job.
#[derive(Clone)]
pub struct JobContext {
    /// Job id (rq job id, or AMQP message id).
    pub id: String,
    /// Queue (lane) the job came from.
    pub queue: String,
    /// Where it came from (compares with `"redis"` / `"amqp"` text too).
    pub source: crate::core::Source,
    /// The function name the job asked for.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// 1 for the first attempt.
    pub attempt: u32,
    progress: Option<ProgressFn>,
    raw: Option<Arc<RawJob>>,
}

impl JobContext {
    /// A context for one job (a plain record: each argument is one field).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        queue: String,
        source: crate::core::Source,
        function: String,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        attempt: u32,
        progress: Option<ProgressFn>,
    ) -> Self {
        JobContext {
            id,
            queue,
            source,
            function,
            args,
            kwargs,
            attempt,
            progress,
            raw: None,
        }
    }

    /// Attaches the job as stored ([`JobContext::raw`]).
    pub fn with_raw(mut self, raw: RawJob) -> Self {
        self.raw = Some(Arc::new(raw));
        self
    }

    /// The job as its source stored it (data bytes, serializer, description, timeout).
    pub fn raw(&self) -> Option<&RawJob> {
        self.raw.as_deref()
    }

    /// Merges `meta` into the job's saved `meta` (rq jobs; written in order, before the
    /// outcome is recorded). Same as [`JobContext::report_progress`].
    pub fn save_meta(&self, meta: Map<String, Value>) {
        self.report_progress(meta);
    }

    /// Publishes progress (merged into `job.meta` for rq jobs); never blocks.
    pub fn report_progress(&self, meta: Map<String, Value>) {
        if let Some(p) = &self.progress {
            p(meta);
        }
    }

    /// The progress callback, for libraries that take one.
    pub fn progress_fn(&self) -> Option<ProgressFn> {
        self.progress.clone()
    }
}

/// A handler's failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct HandlerError {
    /// Short error type, shown like a Python exception class (e.g. `ValueError`).
    pub kind: String,
    /// Human message.
    pub message: String,
    /// Whether trying again may help; permanent errors skip retries and dead-letter at once.
    pub retryable: bool,
    /// A complete exception text (e.g. a Python traceback) recorded verbatim as rq's
    /// `exc_string` instead of the one the worker composes from `kind` and `message`.
    pub exc_string: Option<String>,
    /// The job's rq callback for this outcome (`on_failure`) already ran (a Python pool
    /// runs it), so the job's record must not say it was not run.
    pub callbacks_run: bool,
}

impl HandlerError {
    /// A failure worth retrying (the default for handler errors, as in rq).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
            exc_string: None,
            callbacks_run: false,
        }
    }

    /// A failure no retry can fix (bad input).
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
            exc_string: None,
            callbacks_run: false,
        }
    }

    /// Records `exc_string` verbatim as the failure's text (rq's `exc_string`).
    pub fn with_exc_string(mut self, exc_string: impl Into<String>) -> Self {
        self.exc_string = Some(exc_string.into());
        self
    }

    /// Marks the job's `on_failure` / `on_stopped` callback as run by the handler.
    pub fn with_callbacks_run(mut self) -> Self {
        self.callbacks_run = true;
        self
    }
}

/// A function the worker can run.
pub trait Handler: Send + Sync + 'static {
    /// Runs one job.
    fn call(&self, ctx: JobContext) -> HandlerFuture;

    /// Whether the handler enforces the job's timeout itself (a process pool starts the
    /// clock when a process takes the job, not while the job waits for one); the worker
    /// then applies no timer of its own.
    fn owns_timeout(&self) -> bool {
        false
    }

    /// Whether the handler runs the job's rq callbacks (`on_success`, and `on_stopped`
    /// when the job is stopped); failures say so per error ([`HandlerError::callbacks_run`]).
    fn runs_callbacks(&self) -> bool {
        false
    }
}

impl<F, Fut, R> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: Into<Output> + 'static,
{
    fn call(&self, ctx: JobContext) -> HandlerFuture {
        let fut = self(ctx);
        Box::pin(async move { fut.await.map(Into::into) })
    }
}

/// Handlers by function name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` under `name`, replacing any earlier one.
    pub fn register(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Sets the handler for jobs whose function no registered handler serves (e.g. a pool
    /// of Python processes that imports the function); it sees the job through
    /// [`JobContext::raw`].
    pub fn set_fallback(&mut self, handler: impl Handler) -> &mut Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Looks a handler up: the one registered under `name`, else the fallback.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers
            .get(name)
            .cloned()
            .or_else(|| self.fallback.clone())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// The error for a job that names no registered function.
    pub fn unknown(&self, name: &str) -> HandlerError {
        HandlerError::permanent(
            "UnknownFunction",
            format!(
                "function {name:?} is not registered with this mindora-worker; registered: {}",
                self.names().join(", ")
            ),
        )
    }
}
