//! The span of one job attempt: a CONSUMER span `process <queue>` after the OpenTelemetry
//! messaging conventions, continuing the producer's trace.
//!
//! **Retries stay in the producer's trace.** Every attempt is its own `process` span and a
//! child of the producer's context, which the job keeps across retries (rq: `job.meta`;
//! AMQP: the message headers, copied onto the retry message). One trace then answers "why
//! did my upload take four minutes": the request, each attempt, the retry delays between
//! them (`mindora.retry.delay_s` on the failed attempt, the gap on the timeline) and the
//! queue wait of each (`messaging.mindora.queue_wait_ms`). A job with no context starts a
//! new trace of its own.

use chrono::{DateTime, Utc};
use mindora_sdk::wire::trace::Carrier;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::KeyValue;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::core::{Action, Executed, Interrupt, Outcome, Source};
use crate::handler::JobContext;

/// What the producer left with the job for its span.
#[derive(Debug, Clone, Default)]
pub struct Producer {
    /// W3C trace context (empty: a new trace).
    pub carrier: Carrier,
    /// When the job last entered its queue (rq `enqueued_at`, AMQP `timestamp`).
    pub enqueued_at: Option<DateTime<Utc>>,
}

/// `messaging.system` of a source (rq has no registered value; `rq` is what the field uses).
fn system(source: Source) -> &'static str {
    match source {
        Source::Redis => "rq",
        Source::Amqp => "rabbitmq",
        Source::Memory => "mindora.memory",
    }
}

/// The attempt's span, parented on the producer's context; [`Span::none`] when tracing is
/// off, so an untraced process builds nothing.
pub fn process_span(ctx: &JobContext, producer: &Producer) -> Span {
    if !super::enabled() {
        return Span::none();
    }
    let wait_ms = producer
        .enqueued_at
        .map(|at| (Utc::now() - at).num_milliseconds().max(0));
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", ctx.queue),
        otel.kind = "consumer",
        messaging.system = system(ctx.source),
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %ctx.queue,
        messaging.message.id = %ctx.id,
        messaging.consumer.group.name = super::worker_name(),
        messaging.mindora.queue_wait_ms = wait_ms,
        mindora.job.function = %ctx.function,
        mindora.job.attempt = ctx.attempt,
        mindora.worker.name = super::worker_name(),
    );
    if !producer.carrier.is_empty() {
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&producer.carrier));
        if parent.span().span_context().is_valid() {
            // Set before the span is first entered, so it cannot have started yet.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// The attempt's trace id (32 lowercase hex digits) when its span is exported: tracing on
/// and the trace sampled. The job history stores it so a row links to its trace.
pub fn trace_id(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// Writes what happened to the attempt onto its span: ERROR with an `exception` event on
/// failure, and what the source does next (retry after a delay, dead letter, give back).
pub fn record(span: &Span, executed: &Executed, action: &Action) {
    if span.is_none() {
        return;
    }
    match &executed.outcome {
        Outcome::Done(_) => {}
        Outcome::Failed(err) => {
            span.set_status(Status::error(format!("{}: {}", err.kind, err.message)));
            let mut attrs = vec![
                KeyValue::new("exception.type", err.kind.clone()),
                KeyValue::new("exception.message", err.message.clone()),
            ];
            if let Some(text) = &err.exc_string {
                attrs.push(KeyValue::new("exception.stacktrace", text.clone()));
            }
            span.add_event("exception", attrs);
        }
        Outcome::Interrupted(Interrupt::Stop) => span.set_status(Status::error("stopped")),
        Outcome::Interrupted(Interrupt::Shutdown) => {}
    }
    let outcome = match action {
        Action::Finish => "finished",
        Action::Retry { delay_secs, .. } => {
            span.set_attribute("mindora.retry.delay_s", *delay_secs as i64);
            span.add_event(
                "retry scheduled",
                vec![KeyValue::new("mindora.retry.delay_s", *delay_secs as i64)],
            );
            "retried"
        }
        Action::DeadLetter(reason) => {
            span.add_event(
                "dead-lettered",
                vec![KeyValue::new("mindora.dead_letter.reason", reason.as_str())],
            );
            "dead_lettered"
        }
        Action::Stopped => "stopped",
        Action::GiveBack => "given_back",
        Action::Drop => "dropped",
    };
    span.set_attribute("mindora.job.outcome", outcome);
}
