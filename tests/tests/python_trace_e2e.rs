//! End to end (issue 21): a Python producer enqueues a job with W3C context in `job.meta`
//! (as `opentelemetry-instrumentation-rq` or the ten lines in the README write it), a
//! tracing-enabled `mindora-worker --python` runs it, and the Python function sees the
//! worker's `process` span as its current OpenTelemetry span: the producer's trace id, and a
//! span id the worker exported (to a local OTLP/HTTP receiver) with the producer's span as
//! parent. The runner side alone is `worker/tests/python_trace.rs`.
//!
//! The worker's side: the `process <queue>` span is current while the Python handler runs, so
//! `mindora_sdk::trace::current()` in `worker/src/python/handler.rs` is its context; its parent
//! comes from `job.meta["traceparent"]`; export is OTLP/HTTP from `OTEL_EXPORTER_OTLP_ENDPOINT`
//! with a short `OTEL_BSP_SCHEDULE_DELAY`, and a flush at shutdown.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mindora_tests::otlp::{kind, OtlpReceiver};
use mindora_tests::{cache_dir, ids, repo_root, run_python, wait_statuses, RedisDb, WorkerProcess};

const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_python_job_continues_the_producers_trace_through_the_worker() -> Result<()> {
    let db = RedisDb::lease()?;
    let receiver = OtlpReceiver::start()?;
    run_python(
        "2.12",
        &db,
        &format!(
            r#"
from rq.serializers import JSONSerializer
q = Queue("default", connection=r, serializer=JSONSerializer)
q.enqueue("tracetasks.span_ids", job_id="traced",
          meta={{"traceparent": "00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"}})
q.enqueue("tracetasks.span_ids_async", job_id="traced-async",
          meta={{"traceparent": "00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"}})
q.enqueue("tracetasks.span_ids", job_id="root")
"#
        ),
    )?;
    let interpreter = cache_dir().join("venv-otel/bin/python");
    let path =
        std::env::join_paths([repo_root().join("python"), repo_root().join("tests/python")])?;
    let endpoint = receiver.http_endpoint();
    let mut worker = WorkerProcess::spawn(
        &db.url(),
        "w-trace",
        &[
            "--python",
            "--python-interpreter",
            &interpreter.display().to_string(),
            "--python-path",
            &path.to_string_lossy(),
            "--python-processes",
            "1",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "mindora-worker-test"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )?;
    wait_statuses(
        &db,
        &ids(&["traced", "traced-async", "root"]),
        &["finished"],
        Duration::from_secs(60),
    )?;
    let out = run_python(
        "2.12",
        &db,
        r#"
import json
from rq.job import Job
from rq.serializers import JSONSerializer
print(json.dumps({i: Job.fetch(i, connection=r, serializer=JSONSerializer).return_value()
                  for i in ("traced", "traced-async", "root")}))
"#,
    )?;
    let seen: serde_json::Value = serde_json::from_str(out.trim())?;
    let mut worker_spans = Vec::new();
    for id in ["traced", "traced-async"] {
        let ids = &seen[id];
        assert_eq!(ids["trace_id"], PRODUCER_TRACE, "{id}: {ids}");
        assert_eq!(ids["valid"], true, "{id}: {ids}");
        let span = ids["span_id"].as_str().context("span_id")?.to_string();
        assert_ne!(
            span, PRODUCER_SPAN,
            "{id}: the worker's own span is current, not the producer's"
        );
        worker_spans.push(span);
    }
    // A job with no context is a new root, still the worker's span.
    let root = &seen["root"];
    assert_eq!(root["valid"], true, "{root}");
    assert_ne!(root["trace_id"], PRODUCER_TRACE, "{root}");

    worker.signal("TERM")?;
    let _ = worker.wait_exit(Duration::from_secs(30));
    let spans = receiver.wait_for(
        Duration::from_secs(20),
        "the worker's spans exported",
        |s| {
            worker_spans
                .iter()
                .all(|id| s.iter().any(|span| &span.span_id == id))
        },
    )?;
    for id in &worker_spans {
        let span = spans
            .iter()
            .find(|s| &s.span_id == id)
            .context("exported span")?;
        ensure!(
            span.kind == kind::CONSUMER
                && span.trace_id == PRODUCER_TRACE
                && span.parent_span_id == PRODUCER_SPAN,
            "the span current in Python is the worker's attempt under the producer: {span:#?}"
        );
    }
    Ok(())
}
