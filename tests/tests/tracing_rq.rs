//! Tracing against real producers: Python rq 2.12/3.0 (pickle and JSON) puts W3C, Sentry or
//! no context into `job.meta`; the real `mindora-worker` binary exports its spans over OTLP
//! (HTTP/protobuf and gRPC) to a receiver that decodes them with the official protobuf
//! definitions. Checked: one trace id from producer to attempt, the right parent, the
//! messaging attributes, failures and retries, JSON log ids, and a dead collector.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mindora_tests::otlp::{kind, OtlpReceiver, Span};
use mindora_tests::python_rq::PythonRq;
use mindora_tests::{
    free_port, http_get, ids, wait_for, wait_statuses, worker_binary, WorkerProcess,
};

const T: Duration = Duration::from_secs(30);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn otel_env<'a>(endpoint: &'a str, protocol: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        // Short batches: the test waits for spans, not for the 5 s default.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ]
}

fn process_spans(spans: &[Span], job: &str) -> Vec<Span> {
    let mut out: Vec<Span> = spans
        .iter()
        .filter(|s| s.kind == kind::CONSUMER && s.attr("messaging.message.id") == Some(job))
        .cloned()
        .collect();
    out.sort_by_key(|s| s.start_ns);
    out
}

fn worker(rq: &PythonRq, name: &str, env: &[(&str, &str)]) -> Result<WorkerProcess> {
    WorkerProcess::spawn(&rq.db.url(), name, &["--queues", "default"], env)
}

#[test]
fn a_w3c_context_in_meta_is_continued_over_http_and_grpc_with_pickle_and_json() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    for (version, protocol, serializer) in
        [("3.0", "http/protobuf", "pickle"), ("2.12", "grpc", "json")]
    {
        let rq = PythonRq::lease(version)?;
        let endpoint = match protocol {
            "grpc" => receiver.grpc_endpoint(),
            _ => receiver.http_endpoint(),
        };
        let job = format!("w3c-{serializer}");
        let ser = match serializer {
            "json" => "from rq.serializers import JSONSerializer as S",
            _ => "from rq.serializers import DefaultSerializer as S",
        };
        rq.enqueue(&format!(
            r#"
{ser}
q = Queue("default", connection=r, serializer=S)
q.enqueue("mindora.echo", 1, job_id="{job}",
          meta={{"traceparent": "00-{TRACE}-{PARENT}-01", "tracestate": "vendor=x"}})
"#
        ))?;
        let _w = worker(
            &rq,
            &format!("w-trace-{serializer}"),
            &otel_env(&endpoint, protocol),
        )?;
        wait_statuses(&rq.db, &ids(&[&job]), &["finished"], T)?;
        let spans = receiver.wait_for(T, "the attempt's span", |s| {
            !process_spans(s, &job).is_empty()
        })?;
        let span = &process_spans(&spans, &job)[0];
        ensure!(span.trace_id == TRACE, "trace id {}", span.trace_id);
        ensure!(
            span.parent_span_id == PARENT,
            "parent {}",
            span.parent_span_id
        );
        ensure!(span.name == "process default", "name {}", span.name);
        ensure!(span.protocol == protocol.split('/').next().unwrap_or(""));
        ensure!(span.service == "mindora-worker", "service {}", span.service);
        for (k, v) in [
            ("messaging.system", "rq"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "default"),
            ("mindora.job.function", "mindora.echo"),
            ("mindora.job.attempt", "1"),
            ("mindora.job.outcome", "finished"),
            ("mindora.worker.name", &format!("w-trace-{serializer}")),
        ] {
            ensure!(
                span.attr(k) == Some(v),
                "{k} = {:?} on {span:#?}",
                span.attr(k)
            );
        }
        ensure!(span.attr("messaging.mindora.queue_wait_ms").is_some());
        ensure!(span.status == 0, "a finished job has no error status");
    }
    ensure!(receiver.refused() == 0, "requests that did not decode");
    Ok(())
}

#[test]
fn a_retried_then_failed_job_is_one_trace_with_an_error_per_attempt() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(&format!(
        r#"
from rq import Retry
q.enqueue("mindora.fail", "boom", job_id="retried", retry=Retry(max=1),
          meta={{"traceparent": "00-{TRACE}-{PARENT}-01"}})
"#
    ))?;
    let endpoint = receiver.http_endpoint();
    let _w = worker(&rq, "w-trace-retry", &otel_env(&endpoint, "http/protobuf"))?;
    wait_statuses(&rq.db, &ids(&["retried"]), &["failed"], T)?;
    let spans = receiver.wait_for(T, "two attempts", |s| {
        process_spans(s, "retried").len() == 2
    })?;
    let attempts = process_spans(&spans, "retried");
    for (n, span) in attempts.iter().enumerate() {
        ensure!(
            span.trace_id == TRACE && span.parent_span_id == PARENT,
            "{span:#?}"
        );
        ensure!(span.status == 2, "attempt {n} is an error: {span:#?}");
        let exc = span
            .events
            .iter()
            .find(|(name, _)| name == "exception")
            .context("exception event")?;
        ensure!(exc
            .1
            .get("exception.message")
            .is_some_and(|m| m.contains("boom")));
    }
    ensure!(attempts[0].attr("mindora.job.outcome") == Some("retried"));
    ensure!(attempts[0]
        .events
        .iter()
        .any(|(n, _)| n == "retry scheduled"));
    ensure!(attempts[1].attr("mindora.job.outcome") == Some("dead_lettered"));
    ensure!(attempts[0].span_id != attempts[1].span_id);
    Ok(())
}

#[test]
fn no_context_is_a_new_root_and_sentry_context_is_continued() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(&format!(
        r#"
q.enqueue("mindora.echo", 1, job_id="bare")
q.enqueue("mindora.echo", 2, job_id="sentry", meta={{"_sentry_trace_headers": {{
    "sentry-trace": "{TRACE}-{PARENT}-1", "baggage": "sentry-trace_id={TRACE}"}}}})
"#
    ))?;
    let endpoint = receiver.http_endpoint();
    let _w = worker(&rq, "w-trace-roots", &otel_env(&endpoint, "http/protobuf"))?;
    wait_statuses(&rq.db, &ids(&["bare", "sentry"]), &["finished"], T)?;
    let spans = receiver.wait_for(T, "both spans", |s| {
        !process_spans(s, "bare").is_empty() && !process_spans(s, "sentry").is_empty()
    })?;
    let bare = &process_spans(&spans, "bare")[0];
    ensure!(
        bare.parent_span_id.is_empty() && bare.trace_id != TRACE,
        "{bare:#?}"
    );
    let sentry = &process_spans(&spans, "sentry")[0];
    ensure!(
        sentry.trace_id == TRACE && sentry.parent_span_id == PARENT,
        "{sentry:#?}"
    );
    Ok(())
}

#[test]
fn json_logs_carry_the_trace_and_span_ids_of_the_job() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(&format!(
        r#"q.enqueue("mindora.echo", 1, job_id="logged", meta={{"traceparent": "00-{TRACE}-{PARENT}-01"}})"#
    ))?;
    let mut child = Command::new(worker_binary()?)
        .args(["--redis-url", &rq.db.url(), "--name", "w-trace-logs"])
        .env("MINDORA_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(otel_env(&receiver.http_endpoint(), "http/protobuf"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting mindora-worker")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = wait_for(T, "the job's 'job finished' log line", || {
        Ok(rx.try_iter().find(|l| l.contains("job finished")))
    });
    let spans = receiver.wait_for(T, "the span", |s| !process_spans(s, "logged").is_empty());
    let _ = child.kill();
    let _ = child.wait();
    let entry: serde_json::Value = serde_json::from_str(&line?)?;
    ensure!(entry["trace_id"] == TRACE, "log line: {entry}");
    let span = &process_spans(&spans?, "logged")[0];
    ensure!(
        entry["span_id"] == span.span_id.as_str(),
        "log {entry} vs span {span:#?}"
    );
    Ok(())
}

#[test]
fn a_dead_collector_never_holds_a_job_and_is_counted() -> Result<()> {
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(
        r#"
for i in range(20):
    q.enqueue("mindora.echo", i, job_id=f"dead{i}", meta={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
"#,
    )?;
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut env = otel_env(&closed, "http/protobuf");
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "500"));
    let _w = WorkerProcess::spawn(
        &rq.db.url(),
        "w-trace-dead",
        &["--metrics-addr", &addr],
        &env,
    )?;
    let all: Vec<String> = (0..20).map(|i| format!("dead{i}")).collect();
    wait_statuses(&rq.db, &all, &["finished"], T)?;
    wait_for(Duration::from_secs(60), "a counted export failure", || {
        let text = http_get(port, "/metrics")?;
        Ok(text
            .lines()
            .any(|l| l.starts_with("mindora_trace_export_failures_total ") && !l.ends_with(" 0"))
            .then_some(()))
    })?;
    Ok(())
}

#[test]
fn each_cron_tick_is_a_trace_of_its_own_from_producer_to_attempt() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let rq = PythonRq::lease("3.0")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cron.yml");
    std::fs::write(
        &file,
        "job:\n  - name: traced-beat\n    cron: \"* * * * * *\"\n    queue: cronq\n    func: mindora.echo\n",
    )?;
    let f = file.to_string_lossy().to_string();
    let endpoint = receiver.http_endpoint();
    let _w = WorkerProcess::spawn(
        &rq.db.url(),
        "w-trace-cron",
        &["--queues", "cronq", "--cron", &f],
        &otel_env(&endpoint, "http/protobuf"),
    )?;
    let spans = receiver.wait_for(T, "two ticks, each produced and processed", |s| {
        s.iter()
            .filter(|p| p.kind == kind::CONSUMER)
            .filter(|c| {
                s.iter().any(|p| {
                    p.kind == kind::PRODUCER
                        && p.parent_span_id.is_empty()
                        && p.span_id == c.parent_span_id
                        && p.trace_id == c.trace_id
                })
            })
            .count()
            >= 2
    })?;
    let producers: Vec<&Span> = spans.iter().filter(|s| s.kind == kind::PRODUCER).collect();
    ensure!(producers[0].attr("mindora.cron.entry") == Some("traced-beat"));
    ensure!(
        producers[0].trace_id != producers[1].trace_id,
        "one trace per tick"
    );
    Ok(())
}

#[test]
fn a_webhook_is_a_client_span_of_the_attempt_and_carries_its_context() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let hooks = mindora_tests::hook_server::HookServer::start()?;
    let rq = PythonRq::lease("3.0")?;
    rq.enqueue(&format!(
        r#"
from rq import Webhook
q.enqueue("mindora.echo", 1, job_id="hooked", webhooks=[Webhook("{}", "finished", method="POST")],
          meta={{"traceparent": "00-{TRACE}-{PARENT}-01"}})
"#,
        hooks.url("/done?token=secret")
    ))?;
    let endpoint = receiver.http_endpoint();
    let _w = worker(&rq, "w-trace-hook", &otel_env(&endpoint, "http/protobuf"))?;
    wait_statuses(&rq.db, &ids(&["hooked"]), &["finished"], T)?;
    let spans = receiver.wait_for(T, "the webhook span", |s| {
        s.iter()
            .any(|c| c.kind == kind::CLIENT && c.trace_id == TRACE)
    })?;
    let process = &process_spans(&spans, "hooked")[0];
    let hook = spans
        .iter()
        .find(|c| c.kind == kind::CLIENT && c.trace_id == TRACE)
        .context("client span")?;
    ensure!(hook.parent_span_id == process.span_id, "{hook:#?}");
    ensure!(
        hook.attr("http.response.status_code") == Some("200"),
        "{hook:#?}"
    );
    ensure!(
        hook.attr("url.full").is_some_and(|u| !u.contains("secret")),
        "no query in the span: {hook:#?}"
    );
    let got = hooks.requests();
    let req = got.first().context("the webhook request")?;
    ensure!(
        req.headers.get("traceparent").map(String::as_str)
            == Some(format!("00-{TRACE}-{}-01", hook.span_id).as_str()),
        "headers {:?}",
        req.headers
    );
    Ok(())
}
