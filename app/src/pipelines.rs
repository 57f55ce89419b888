//! The document pipelines (`mindora-pipelines`) as worker handlers: `pipelines.*` function
//! names callable from Python rq (and RabbitMQ), with progress written to the job's `meta`.

use mindora_pipelines::{Function, JobInfo, PipelineError, Pipelines, ProgressSink};
use serde_json::{Map, Value};

use mindora_worker::handler::{HandlerError, JobContext, ProgressFn, Registry};

/// Forwards pipeline progress to the job's progress callback.
struct Progress(Option<ProgressFn>);

impl ProgressSink for Progress {
    fn report(&self, meta: Map<String, Value>) {
        if let Some(p) = &self.0 {
            p(meta);
        }
    }
}

/// Registers every `pipelines.*` function under its rq name.
pub fn register(registry: &mut Registry, pipelines: Pipelines) {
    for function in Function::ALL {
        let pipelines = pipelines.clone();
        registry.register(function.name(), move |ctx: JobContext| {
            let pipelines = pipelines.clone();
            async move {
                let job = JobInfo {
                    id: ctx.id.clone(),
                    queue: ctx.queue.clone(),
                    source: ctx.source.to_string(),
                };
                let progress = Progress(ctx.progress_fn());
                pipelines
                    .call_function(function, &job, &ctx.args, &ctx.kwargs, &progress)
                    .await
                    .map_err(to_handler_error)
            }
        });
    }
}

/// Transient service errors are retried; bad input and configuration are not.
fn to_handler_error(e: PipelineError) -> HandlerError {
    if e.is_retryable() {
        HandlerError::retryable("PipelineServiceError", e.to_string())
    } else {
        HandlerError::permanent("PipelineError", e.to_string())
    }
}
