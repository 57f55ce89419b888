//! The `--python` pool joins the worker's trace (issue 21): the `job` message carries the W3C
//! headers of the attempt's span and the runner makes them the current OpenTelemetry context
//! around the call, when the team's venv has OpenTelemetry (`venv-otel` from
//! `tests/setup-python.sh`), and ignores them when it has not. The headers are set on the
//! `PyJob` directly here (the protocol level); the worker filling them from its own span is
//! `tests/tests/python_trace_e2e.rs`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mindora_tests::{cache_dir, python, repo_root, run_python, RedisDb};
use mindora_worker::python::{FailureKind, PoolConfig, PyJob, PyOutcome, PythonPool};
use serde_json::Value;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

fn otel_python() -> Result<std::path::PathBuf> {
    let p = cache_dir().join("venv-otel/bin/python");
    if !p.exists() {
        bail!(
            "{} is missing: run `bash tests/setup-python.sh` first",
            p.display()
        );
    }
    Ok(p)
}

fn config(interpreter: std::path::PathBuf, db: &RedisDb) -> PoolConfig {
    let mut cfg = PoolConfig::new(interpreter, db.url()).expect("the pool flags' defaults");
    cfg.python_path = vec![repo_root().join("python"), repo_root().join("tests/python")];
    cfg.processes = 1;
    cfg
}

fn traceparent(trace_id: &str, span_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "traceparent".to_string(),
            format!("00-{trace_id}-{span_id}-01"),
        ),
        ("tracestate".to_string(), "mindora=test".to_string()),
    ])
}

fn job(id: &str, timeout_secs: u64, trace: HashMap<String, String>) -> PyJob {
    PyJob {
        id: id.to_string(),
        origin: "py".to_string(),
        timeout: Some(Duration::from_secs(timeout_secs)),
        trace,
    }
}

/// The JSON the function returned.
fn returned(outcome: PyOutcome, what: &str) -> Result<Value> {
    match outcome {
        PyOutcome::Returned(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{what}: not JSON"))
        }
        PyOutcome::Failed(f) => bail!("{what} failed: {:?}: {}", f.kind, f.exc_string),
    }
}

fn enqueue(db: &RedisDb, jobs: &[(&str, &str, &str)]) -> Result<()> {
    let mut code = String::from(
        "from rq.serializers import JSONSerializer\nq = Queue('py', connection=r, serializer=JSONSerializer)\n",
    );
    for (id, func, args) in jobs {
        code.push_str(&format!("q.enqueue({func:?}, {args} job_id={id:?})\n"));
    }
    run_python("2.12", db, &code).map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_context_is_current_in_sync_and_async_jobs_and_only_there() -> Result<()> {
    let db = RedisDb::lease()?;
    enqueue(
        &db,
        &[
            ("sync", "tracetasks.span_ids", ""),
            ("async", "tracetasks.span_ids_async", ""),
            ("fail", "tracetasks.span_ids_then_fail", ""),
            ("after-fail", "tracetasks.span_ids", ""),
            ("child", "tracetasks.child_span", ""),
            ("cancelled", "tracetasks.span_ids_async_then_sleep", "3600,"),
            ("after-cancel", "tracetasks.span_ids_async", ""),
            ("one", "tracetasks.span_ids_async_then_sleep", "0.3,"),
            ("two", "tracetasks.span_ids_async_then_sleep", "0.3,"),
        ],
    )?;
    let pool = PythonPool::start(config(otel_python()?, &db)).await?;
    let sent = || traceparent(TRACE_ID, SPAN_ID);

    for id in ["sync", "async"] {
        let ids = returned(pool.run(job(id, 30, sent())).await, id)?;
        assert_eq!(ids["otel"], true, "{id}: {ids}");
        assert_eq!(ids["trace_id"], TRACE_ID, "{id}: {ids}");
        assert_eq!(ids["span_id"], SPAN_ID, "{id}: {ids}");
        assert_eq!(ids["sampled"], true, "{id}: {ids}");
    }

    // A failing job saw the context, and it is gone for the next job in the same process.
    let PyOutcome::Failed(fail) = pool.run(job("fail", 30, sent())).await else {
        bail!("fail returned");
    };
    assert_eq!(fail.kind, FailureKind::Raised);
    assert!(fail.exc_string.contains(TRACE_ID), "{}", fail.exc_string);
    let after = returned(
        pool.run(job("after-fail", 30, HashMap::new())).await,
        "after-fail",
    )?;
    assert_eq!(
        after["valid"], false,
        "the context was detached after the failure: {after}"
    );

    // The team's own spans (OpenTelemetry SDK) are children of the worker's span.
    let child = returned(pool.run(job("child", 30, sent())).await, "child")?;
    assert_eq!(child["trace_id"], TRACE_ID, "{child}");
    assert_eq!(child["parent_span_id"], SPAN_ID, "{child}");
    assert_eq!(child["parent_remote"], true, "{child}");
    assert_ne!(child["span_id"], SPAN_ID, "{child}");

    // An async job cancelled at its timeout; the process lives on with no context left.
    let PyOutcome::Failed(cancelled) = pool.run(job("cancelled", 1, sent())).await else {
        bail!("cancelled returned");
    };
    assert_eq!(
        cancelled.kind,
        FailureKind::Timeout,
        "{}",
        cancelled.exc_string
    );
    let after = returned(
        pool.run(job("after-cancel", 30, HashMap::new())).await,
        "after-cancel",
    )?;
    assert_eq!(after["valid"], false, "{after}");

    // Two async jobs at once in one process each see their own trace.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let other_span = "b7ad6b7169203331";
    let (one, two) = tokio::join!(
        pool.run(job("one", 30, sent())),
        pool.run(job("two", 30, traceparent(other_trace, other_span)))
    );
    let (one, two) = (returned(one, "one")?, returned(two, "two")?);
    assert_eq!(
        (&one["trace_id"], &one["span_id"]),
        (&TRACE_ID.into(), &SPAN_ID.into()),
        "{one}"
    );
    assert_eq!(
        (&two["trace_id"], &two["span_id"]),
        (&other_trace.into(), &other_span.into()),
        "{two}"
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_opentelemetry_in_the_venv_jobs_run_as_before() -> Result<()> {
    let db = RedisDb::lease()?;
    enqueue(
        &db,
        &[
            ("sync", "tracetasks.span_ids", ""),
            ("async", "tracetasks.span_ids_async", ""),
        ],
    )?;
    let pool = PythonPool::start(config(python("2.12")?, &db)).await?;
    for id in ["sync", "async"] {
        let out = returned(
            pool.run(job(id, 30, traceparent(TRACE_ID, SPAN_ID))).await,
            id,
        )?;
        assert_eq!(out, serde_json::json!({"otel": false}), "{id}");
    }
    pool.shutdown().await;
    Ok(())
}
