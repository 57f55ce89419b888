//! Tracing (issue 21, item 3): a document run under a job span yields one INTERNAL span per
//! stage as its children and CLIENT/PRODUCER spans for every outgoing call under the stages,
//! with the semantic-convention attributes; each service receives the W3C `traceparent` of its
//! client span (the OpenAI, Elasticsearch and Qdrant stand-ins, the real S3 server through a
//! recording proxy, the real RabbitMQ in the notification's AMQP headers); a failing stage is
//! ERROR with an `exception` event; without OpenTelemetry nothing is sent.
//!
//! Spans are exported through `tracing-opentelemetry` into the SDK's in-memory exporter, with
//! the W3C propagator installed globally as the engine installs it. The subscriber is
//! process-global (spans cross threads), so each test needs its own process: nextest's model.

use std::collections::BTreeMap;

use mindora_pipelines::{PipelineError, Pipelines};
use mindora_tests::pipelines::{env, long_pdf, Env, AMQP_URL};
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::{Instrument, Level};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

const STAGES: [&str; 7] = [
    "fetch", "extract", "chunk", "embed", "index", "record", "notify",
];

struct Otel {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

/// Installs the OpenTelemetry layer over an in-memory exporter and the W3C propagator.
fn install() -> Otel {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The pipelines' spans and this test's job spans (target `telemetry`), not the clients'
    // own debug spans.
    let only = Targets::new()
        .with_target("mindora_pipelines", Level::TRACE)
        .with_target("telemetry", Level::TRACE);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pipelines-test"))
        .with_filter(only);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    Otel { exporter, provider }
}

impl Otel {
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn has(s: &SpanData, key: &str, value: &str) {
    assert_eq!(
        attr(s, key).as_deref(),
        Some(value),
        "{key} of span {:?}: {:?}",
        s.name,
        s.attributes
    );
}

/// The `traceparent` that names `s` (sampled).
fn traceparent(s: &SpanData) -> String {
    format!(
        "00-{}-{}-01",
        s.span_context.trace_id(),
        s.span_context.span_id()
    )
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "spans named {name:?} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn is_child(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{} not in the trace of {}",
        child.name,
        parent.name
    );
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} is not a child of {}",
        child.name,
        parent.name
    );
}

/// Client spans of one database system (`db.system.name`).
fn db_spans<'a>(spans: &'a [SpanData], system: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| attr(s, "db.system.name").as_deref() == Some(system))
        .collect()
}

/// Sorted, for comparing what a service received with the spans that sent it.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The next notification on the test's queue: its body and its AMQP headers (string values).
async fn notification(queue: &str) -> (serde_json::Value, BTreeMap<String, String>) {
    use lapin::options::BasicGetOptions;
    use lapin::types::AMQPValue;
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for _ in 0..100 {
        if let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let mut headers = BTreeMap::new();
            if let Some(table) = msg.delivery.properties.headers() {
                for (k, v) in table.inner() {
                    if let AMQPValue::LongString(s) = v {
                        headers.insert(k.to_string(), s.to_string());
                    } else {
                        headers.insert(k.to_string(), format!("non-string {v:?}"));
                    }
                }
            }
            let body = serde_json::from_slice(&msg.delivery.data).unwrap();
            let _ = conn.close(200, "bye".into()).await;
            return (body, headers);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no notification on {queue}");
}

/// The pipelines with S3 behind the recording proxy; returns them and the proxy's record.
async fn pipelines(e: &Env) -> (Pipelines, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (endpoint, s3_seen) = e.s3.traceparent_proxy().await;
    let mut config = e.config.clone();
    config.s3_endpoint = Some(endpoint);
    let p = Pipelines::new(config).await.unwrap();
    p.migrate(&e.app).await.unwrap();
    (p, s3_seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_and_client_calls_are_spans_with_context_on_the_wire() {
    let otel = install();
    let e = env(768).await;
    let key = "reports/q1.pdf";
    e.s3.put(&e.bucket, key, long_pdf(3)).await;
    let (p, s3_seen) = pipelines(&e).await;
    otel.exporter.reset();

    let job = tracing::info_span!("job", otel.name = "process ai_processing_tasks");
    let out = e
        .run(&p, "pipelines.process_document", key, json!({}))
        .instrument(job.clone())
        .await
        .unwrap();
    drop(job);
    assert_eq!(out["status"], "done");
    let spans = otel.spans();
    let job = one(&spans, "process ai_processing_tasks");

    // One INTERNAL span per stage, each a child of the job's span, none failed.
    let stage = |name: &str| {
        let s = one(&spans, name);
        is_child(s, job);
        assert_eq!(s.span_kind, SpanKind::Internal, "{name}");
        assert_eq!(s.status, Status::Unset, "{name}");
        has(s, "mindora.document.key", key);
        has(s, "mindora.app", &e.app);
        has(
            s,
            "mindora.document.id",
            out["document_id"].as_str().unwrap(),
        );
        s
    };
    let [fetch, extract, chunk, embed, index, record, notify] = STAGES.map(stage);
    let chunks = out["chunks"].as_u64().unwrap().to_string();
    has(
        fetch,
        "mindora.document.bytes",
        &out["size_bytes"].to_string(),
    );
    has(extract, "mindora.document.format", "pdf");
    has(extract, "mindora.document.pages", "3");
    has(chunk, "mindora.chunks.count", &chunks);
    has(embed, "mindora.vectors.count", &chunks);
    has(embed, "mindora.vectors.dimensions", "768");
    has(
        index,
        "mindora.index.vectors",
        &format!("{}_documents", e.app),
    );
    has(notify, "mindora.notify.event", "document.processed");
    // Stages in order. process_document streams: chunk, embed and index run batch by batch
    // while extraction goes on, so their spans start in order inside extract's and end with it.
    for w in [fetch, extract, record, notify].windows(2) {
        assert!(
            w[0].end_time <= w[1].start_time,
            "{} before {}",
            w[0].name,
            w[1].name
        );
    }
    for w in [extract, chunk, embed, index].windows(2) {
        assert!(
            w[0].start_time <= w[1].start_time,
            "{} starts before {}",
            w[0].name,
            w[1].name
        );
    }
    for s in [chunk, embed, index] {
        assert!(
            s.end_time <= record.start_time,
            "{} ends before record",
            s.name
        );
    }

    // S3: one GetObject under fetch; the server received its context.
    let s3 = one(&spans, "S3.GetObject");
    is_child(s3, fetch);
    assert_eq!(s3.span_kind, SpanKind::Client);
    has(s3, "rpc.system", "aws-api");
    has(s3, "rpc.service", "S3");
    has(s3, "rpc.method", "GetObject");
    has(s3, "aws.s3.bucket", &e.bucket);
    has(s3, "aws.s3.key", key);
    has(s3, "server.address", "127.0.0.1");
    assert_eq!(*s3_seen.lock().unwrap(), vec![traceparent(s3)]);

    // Embeddings: one client span per batch request under embed, each request carrying its own.
    let model = "fake-embed-768";
    let embeds: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == format!("embeddings {model}"))
        .collect();
    assert!(!embeds.is_empty());
    for s in &embeds {
        is_child(s, embed);
        assert_eq!(s.span_kind, SpanKind::Client);
        has(s, "gen_ai.operation.name", "embeddings");
        has(s, "gen_ai.request.model", model);
        has(s, "http.request.method", "POST");
        has(s, "url.full", &format!("{}/embeddings", e.openai.url));
        has(s, "server.address", "127.0.0.1");
    }
    let sent: Vec<String> = embeds.iter().map(|s| traceparent(s)).collect();
    assert_eq!(
        sorted(e.openai.state.lock().unwrap().traceparents.clone()),
        sorted(sent)
    );

    // Elasticsearch and Qdrant: every call a client span under index, every request with its
    // span's context (HTTP header; gRPC metadata).
    for (system, received, ops, target) in [
        (
            "elasticsearch",
            e.es.state.lock().unwrap().traceparents.clone(),
            &["indices.put_index_template", "bulk", "delete_by_query"][..],
            format!("{}-documents", e.app),
        ),
        (
            "qdrant",
            e.qdrant.state.lock().unwrap().traceparents.clone(),
            &["collection_exists", "upsert_points", "delete_points"][..],
            format!("{}_documents", e.app),
        ),
    ] {
        let calls = db_spans(&spans, system);
        for s in &calls {
            is_child(s, index);
            assert_eq!(s.span_kind, SpanKind::Client);
            has(s, "server.address", "127.0.0.1");
            let collection = attr(s, "db.collection.name").unwrap();
            assert!(collection.starts_with(&target), "{collection}");
        }
        for op in ops {
            assert!(
                calls
                    .iter()
                    .any(|s| attr(s, "db.operation.name").as_deref() == Some(op)),
                "no {system} {op} span"
            );
        }
        let sent: Vec<String> = calls.iter().map(|s| traceparent(s)).collect();
        assert_eq!(sorted(received), sorted(sent), "{system}");
    }

    // PostgreSQL: the run written under record.
    let pg = one(&spans, "INSERT documents");
    is_child(pg, record);
    assert_eq!(pg.span_kind, SpanKind::Client);
    has(pg, "db.system.name", "postgresql");
    has(pg, "db.operation.name", "INSERT");
    has(pg, "db.collection.name", "documents");
    has(pg, "db.namespace", &format!("test|mindora_{}", e.app));

    // RabbitMQ: a PRODUCER span under notify whose context is in the message's headers.
    let send = one(&spans, &format!("send {}", e.queue));
    is_child(send, notify);
    assert_eq!(send.span_kind, SpanKind::Producer);
    has(send, "messaging.system", "rabbitmq");
    has(send, "messaging.destination.name", &e.queue);
    has(send, "messaging.operation.type", "send");
    let (body, headers) = notification(&e.queue).await;
    assert_eq!(body["event"], "document.processed");
    assert_eq!(headers.get("traceparent"), Some(&traceparent(send)));
    // Redis pub/sub: a client span (no headers to carry a context).
    let redis = db_spans(&spans, "redis");
    assert_eq!(redis.len(), 1);
    is_child(redis[0], notify);
    has(redis[0], "db.operation.name", "PUBLISH");

    // Every span of the run is in the job's trace.
    for s in &spans {
        assert_eq!(s.span_context.trace_id(), job.span_context.trace_id());
    }
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_stage_spans_cover_loading_their_input() {
    let otel = install();
    let e = env(768).await;
    let key = "a.pdf";
    e.s3.put(&e.bucket, key, long_pdf(1)).await;
    let (p, _) = pipelines(&e).await;
    e.run(&p, "pipelines.extract", key, json!({}))
        .await
        .unwrap();
    otel.exporter.reset();
    let job = tracing::info_span!("job", otel.name = "process chained");
    e.run(&p, "pipelines.chunk", key, json!({}))
        .instrument(job.clone())
        .await
        .unwrap();
    drop(job);
    let spans = otel.spans();
    let job = one(&spans, "process chained");
    let chunk = one(&spans, "chunk");
    is_child(chunk, job);
    let load = one(&spans, "SELECT document_texts");
    is_child(load, chunk);
    has(load, "db.system.name", "postgresql");
    is_child(one(&spans, "record"), job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_is_an_error_with_an_exception_event() {
    let otel = install();
    let e = env(768).await;
    let (p, s3_seen) = pipelines(&e).await;
    otel.exporter.reset();
    let job = tracing::info_span!("job", otel.name = "process failing");
    let err = e
        .run(&p, "pipelines.process_document", "missing.pdf", json!({}))
        .instrument(job.clone())
        .await
        .unwrap_err();
    drop(job);
    assert!(matches!(err, PipelineError::ObjectNotFound { .. }), "{err}");
    let spans = otel.spans();
    let job = one(&spans, "process failing");
    let fetch = one(&spans, "fetch");
    is_child(fetch, job);
    let Status::Error { description } = &fetch.status else {
        panic!("fetch status {:?}", fetch.status);
    };
    assert_eq!(description.as_ref(), err.to_string());
    has(fetch, "error.type", "object_not_found");
    let events: Vec<_> = fetch.events.iter().collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, "exception");
    let field = |k: &str| {
        events[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(field("exception.type").as_deref(), Some("object_not_found"));
    assert_eq!(field("exception.message"), Some(err.to_string()));
    // The S3 call failed too (error.type, no second exception event); its context was sent.
    let s3 = one(&spans, "S3.GetObject");
    is_child(s3, fetch);
    assert!(matches!(s3.status, Status::Error { .. }), "{:?}", s3.status);
    has(s3, "error.type", "object_not_found");
    assert_eq!(*s3_seen.lock().unwrap(), vec![traceparent(s3)]);
    // No stage after the failure; the failure is recorded and notified, both fine.
    assert!(!spans.iter().any(|s| s.name == "extract"));
    for name in ["record", "notify"] {
        let s = one(&spans, name);
        is_child(s, job);
        assert_eq!(s.status, Status::Unset, "{name}");
    }
    let (body, headers) = notification(&e.queue).await;
    assert_eq!(body["event"], "document.failed");
    let send = one(&spans, &format!("send {}", e.queue));
    assert_eq!(headers.get("traceparent"), Some(&traceparent(send)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_opentelemetry_no_context_is_sent() {
    // No layer, no propagator: the process as the engine runs it with OTEL_* unset.
    let e = env(768).await;
    let key = "reports/q1.pdf";
    e.s3.put(&e.bucket, key, long_pdf(2)).await;
    let (p, s3_seen) = pipelines(&e).await;
    let job = tracing::info_span!("job");
    let out = e
        .run(&p, "pipelines.process_document", key, json!({}))
        .instrument(job)
        .await
        .unwrap();
    assert_eq!(out["status"], "done");
    let none = |what: &str, seen: Vec<String>| {
        assert!(!seen.is_empty(), "{what} received nothing");
        assert!(seen.iter().all(String::is_empty), "{what}: {seen:?}");
    };
    none("S3", s3_seen.lock().unwrap().clone());
    none(
        "OpenAI",
        e.openai.state.lock().unwrap().traceparents.clone(),
    );
    none(
        "Elasticsearch",
        e.es.state.lock().unwrap().traceparents.clone(),
    );
    none(
        "Qdrant",
        e.qdrant.state.lock().unwrap().traceparents.clone(),
    );
    let (_, headers) = notification(&e.queue).await;
    assert!(headers.is_empty(), "{headers:?}");
    e.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_do_not_fail_the_stage() {
    let otel = install();
    let e = env(768).await;
    e.s3.put(
        &e.bucket,
        "a.txt",
        "Some text to embed. ".repeat(50).into_bytes(),
    )
    .await;
    let (p, _) = pipelines(&e).await;
    e.openai
        .state
        .lock()
        .unwrap()
        .fail_with
        .extend([429, 500, 429]);
    otel.exporter.reset();
    let job = tracing::info_span!("job", otel.name = "process retried");
    let out = e
        .run(&p, "pipelines.process_document", "a.txt", json!({}))
        .instrument(job.clone())
        .await
        .unwrap();
    drop(job);
    assert_eq!(out["status"], "done");
    let spans = otel.spans();
    // The retry warnings (`error = ...` fields) do not turn the stage into an error.
    let embed = one(&spans, "embed");
    assert_eq!(embed.status, Status::Unset);
    // Each request carried the context of an embeddings span under the stage (the client's
    // own retries resend the same request, so several requests may name one span).
    let calls: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "embeddings fake-embed-768")
        .inspect(|s| is_child(s, embed))
        .map(traceparent)
        .collect();
    let received = e.openai.state.lock().unwrap().traceparents.clone();
    assert!(received.len() >= 4, "{received:?}");
    for tp in &received {
        assert!(calls.contains(tp), "{tp} names no embeddings span");
    }
}
