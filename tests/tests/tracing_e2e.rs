//! Tracing end to end (issue 21), every hop a real program: a FastAPI app (uvicorn,
//! `opentelemetry-instrumentation-fastapi`, the OpenTelemetry SDK and
//! `opentelemetry-instrumentation-rq`, from `examples/fastapi-app`) takes `POST /documents`
//! and enqueues `pipelines.process_document`; the real `mindora-worker` runs it against the
//! real S3 server (s3s-fs), PostgreSQL and RabbitMQ and the wire-checking Elasticsearch,
//! Qdrant and embeddings stand-ins. Both export over OTLP/HTTP to one receiver that decodes
//! with `opentelemetry-proto`. One trace id must hold the HTTP server span, the enqueue
//! (PRODUCER), the worker's `process` span (CONSUMER), the stage spans and the CLIENT spans,
//! each under the right parent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use mindora_tests::otlp::{kind, summary, OtlpReceiver, Span};
use mindora_tests::pipelines::e2e::{Env, RQ_QUEUE};
use mindora_tests::pipelines::long_pdf;
use mindora_tests::{cache_dir, free_port, repo_root, wait_for};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn by_id<'a>(spans: &'a [Span], id: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.span_id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_http_request_through_the_worker_to_every_service() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let e = Env::new().await?;
    let endpoint = receiver.http_endpoint();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let _w = e.start_worker_with("w-trace-e2e", &otel)?;
    let key = "reports/traced.pdf";
    e.s3.put(&e.bucket, key, long_pdf(3)).await;

    let port = free_port()?;
    let python = cache_dir().join("venv-fastapi/bin/python");
    let redis_url = e.db.url();
    let _app = Killed(
        Command::new(&python)
            .args(["-m", "uvicorn", "app:app", "--port", &port.to_string()])
            .args(["--log-level", "warning"])
            .current_dir(repo_root().join("examples/fastapi-app"))
            .env("REDIS_URL", &redis_url)
            .env("PIPELINE_QUEUE", RQ_QUEUE)
            .env("PIPELINE_APP", &e.app)
            .env("OTEL_SERVICE_NAME", "fastapi-app")
            .envs(otel)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting uvicorn with {}", python.display()))?,
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let body = serde_json::json!({"bucket": e.bucket, "key": key, "app": e.app, "user_id": "u-7"});
    let accepted: serde_json::Value = {
        let mut answer = None;
        for _ in 0..100 {
            match client
                .post(format!("{url}/documents"))
                .json(&body)
                .send()
                .await
            {
                Ok(r) => {
                    answer = Some(r.error_for_status()?.json().await?);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        answer.context("the FastAPI app never answered")?
    };
    let job_id = accepted["job_id"].as_str().context("job_id")?.to_string();

    let spans = tokio::task::spawn_blocking({
        let job_id = job_id.clone();
        move || -> Result<Vec<Span>> {
            wait_for(Duration::from_secs(60), "the whole trace", || {
                let spans = receiver.spans();
                let Some(process) = spans.iter().find(|s| {
                    s.kind == kind::CONSUMER && s.attr("messaging.message.id") == Some(&job_id)
                }) else {
                    return Ok(None);
                };
                let trace: Vec<Span> = spans
                    .iter()
                    .filter(|s| s.trace_id == process.trace_id)
                    .cloned()
                    .collect();
                let has = |name: &str| trace.iter().any(|s| s.name == name);
                Ok(
                    (has("notify") && trace.iter().any(|s| s.kind == kind::SERVER))
                        .then_some(trace),
                )
            })
            .with_context(|| format!("{:#?}", summary(&receiver.spans())))
        }
    })
    .await??;

    let ctx = || format!("{:#?}", summary(&spans));
    let server = spans
        .iter()
        .find(|s| s.kind == kind::SERVER && s.service == "fastapi-app")
        .with_context(ctx)?;
    ensure!(
        server.parent_span_id.is_empty(),
        "the request is the root: {}",
        ctx()
    );
    let process = spans
        .iter()
        .find(|s| s.kind == kind::CONSUMER)
        .with_context(ctx)?;
    ensure!(process.service == "mindora-worker");
    let producer = by_id(&spans, &process.parent_span_id).with_context(ctx)?;
    ensure!(
        producer.kind == kind::PRODUCER && producer.service == "fastapi-app",
        "the attempt's parent is the enqueue: {}",
        ctx()
    );
    // The enqueue sits inside the request (directly or under FastAPI's own inner spans).
    let mut up = producer.parent_span_id.clone();
    let mut hops = 0;
    while up != server.span_id {
        up = by_id(&spans, &up).with_context(ctx)?.parent_span_id.clone();
        hops += 1;
        ensure!(
            hops < 10 && !up.is_empty(),
            "enqueue not under the request: {}",
            ctx()
        );
    }
    let stage_span = |stage: &str| {
        spans
            .iter()
            .find(|s| s.name == stage)
            .with_context(|| format!("stage {stage}: {}", ctx()))
    };
    for stage in ["fetch", "extract", "record", "notify"] {
        ensure!(
            stage_span(stage)?.parent_span_id == process.span_id,
            "{stage} under process: {}",
            ctx()
        );
    }
    // process_document streams: chunk, embed and index run batch by batch while extraction
    // reads the pages, inside its span (pipelines/tests/telemetry.rs checks their order).
    let extract = stage_span("extract")?;
    for stage in ["chunk", "embed", "index"] {
        let parent = &stage_span(stage)?.parent_span_id;
        ensure!(
            *parent == extract.span_id || *parent == process.span_id,
            "{stage} under extract or process: {}",
            ctx()
        );
    }
    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == kind::CLIENT).collect();
    for (attr, value) in [
        ("rpc.service", "S3"),
        ("db.system.name", "elasticsearch"),
        ("db.system.name", "qdrant"),
        ("db.system.name", "postgresql"),
        ("gen_ai.operation.name", "embeddings"),
    ] {
        let c = clients
            .iter()
            .find(|c| c.attr(attr) == Some(value))
            .with_context(|| format!("client span {attr}={value}: {}", ctx()))?;
        let parent = by_id(&spans, &c.parent_span_id).with_context(ctx)?;
        ensure!(
            parent.kind == kind::INTERNAL,
            "{value} under a stage: {}",
            ctx()
        );
    }
    ensure!(
        spans
            .iter()
            .any(|s| s.kind == kind::PRODUCER && s.attr("messaging.system") == Some("rabbitmq")),
        "the notification publish: {}",
        ctx()
    );
    Ok(())
}
