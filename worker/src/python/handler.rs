//! The pool as the worker's fallback handler: every rq job whose function no built-in
//! handler serves runs on it (`Registry::set_fallback`).

use crate::handler::{Handler, HandlerError, HandlerFuture, JobContext, Output};

use super::{PyJob, PyOutcome, PythonPool};

/// Runs rq jobs naming no built-in function on the Python pool.
#[derive(Clone)]
pub struct PythonHandler {
    pool: PythonPool,
}

impl PythonHandler {
    /// Wraps a started pool.
    pub fn new(pool: PythonPool) -> Self {
        PythonHandler { pool }
    }
}

impl Handler for PythonHandler {
    /// The pool starts a job's clock when a process takes it: the wait for a free process
    /// is bounded by `--python-wait-secs` instead.
    fn owns_timeout(&self) -> bool {
        true
    }

    /// Runs `on_success`, `on_failure` and `on_stopped` in Python, as rq's worker does.
    fn runs_callbacks(&self) -> bool {
        true
    }

    fn call(&self, ctx: JobContext) -> HandlerFuture {
        let pool = self.pool.clone();
        Box::pin(async move {
            if ctx.source != "redis" {
                return Err(HandlerError::permanent(
                    "UnknownFunction",
                    format!(
                        "function {:?} is not built into this worker (the Python pool runs rq jobs from Redis only)",
                        ctx.function
                    ),
                ));
            }
            let timeout = ctx.raw().and_then(|r| r.timeout);
            // Read here, inside the future: it is polled within the attempt's span, so this
            // is that span's context (empty when tracing is off).
            let job = PyJob {
                id: ctx.id.clone(),
                origin: ctx.queue.clone(),
                timeout,
                trace: mindora_sdk::trace::current(),
            };
            match pool.run(job).await {
                PyOutcome::Returned(bytes) => Ok(Output::Serialized(bytes)),
                PyOutcome::Failed(f) => {
                    let err = if f.retryable() {
                        HandlerError::retryable(f.exc_type.clone(), f.message())
                    } else {
                        HandlerError::permanent(f.exc_type.clone(), f.message())
                    };
                    let err = if f.callbacks_run() {
                        err.with_callbacks_run()
                    } else {
                        err
                    };
                    Err(err.with_exc_string(f.exc_string))
                }
            }
        })
    }
}
