//! Handlers: the functions a worker can run, registered by the dotted name Python code
//! enqueues (`q.enqueue("mindora.echo", ...)`). A job naming no registered handler fails
//! with the list of names this worker serves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Boxed future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// Receives progress updates; the Redis source merges them into the rq job's `meta`.
pub type ProgressFn = Arc<dyn Fn(Map<String, Value>) + Send + Sync>;

/// What a handler is given for one job.
#[derive(Clone)]
pub struct JobContext {
    /// Job id (rq job id, or AMQP message id).
    pub id: String,
    /// Queue (lane) the job came from.
    pub queue: String,
    /// `redis` or `amqp`.
    pub source: &'static str,
    /// The function name the job asked for.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// 1 for the first attempt.
    pub attempt: u32,
    progress: Option<ProgressFn>,
}

impl JobContext {
    /// A context for one job (a plain record: each argument is one field).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        queue: String,
        source: &'static str,
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
        }
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
}

impl HandlerError {
    /// A failure worth retrying (the default for handler errors, as in rq).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix (bad input).
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// A function the worker can run.
pub trait Handler: Send + Sync + 'static {
    /// Runs one job.
    fn call(&self, ctx: JobContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: JobContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Handlers by function name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
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

    /// Looks a handler up.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
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
