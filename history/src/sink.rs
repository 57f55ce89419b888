//! The writer as the engine's attempt sink: each settled attempt becomes a row.

use mindora_worker::core::{AttemptRecord, AttemptSink};

use crate::{Row, Writer};

impl From<AttemptRecord> for Row {
    fn from(r: AttemptRecord) -> Self {
        Row {
            job_id: r.job_id,
            source: r.source.as_str(),
            queue: r.queue,
            function: r.function,
            attempt: r.attempt,
            status: r.status.as_str(),
            worker: r.worker.to_string(),
            enqueued_at: r.enqueued_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            wait_ms: r.wait_ms,
            run_ms: r.run_ms,
            error_type: r.error_type,
            error_message: r.error_message,
            args_summary: r.args_summary,
            retry_at: r.retry_at,
            trace_id: r.trace_id,
        }
    }
}

impl AttemptSink for Writer {
    fn record(&self, rec: AttemptRecord) {
        Writer::record(self, rec.into());
    }
}
