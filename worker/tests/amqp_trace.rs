//! Tracing on the AMQP source: a message whose headers carry W3C context (as pika's and
//! Celery's instrumentations publish it) is processed in a CONSUMER span continuing that
//! trace (and a real pika publisher with `opentelemetry-instrumentation-pika` is the parent of
//! the attempt); a retried message keeps it on every attempt; the SDK's publisher writes the
//! caller's context into the headers, and the rq SDK into `job.meta`. Spans go over OTLP/HTTP to the test kit's receiver,
//! which decodes them with the official protobuf definitions.
//!
//! One test in this file: it installs the process-wide tracing subscriber.

use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use mindora_sdk::amqp::Envelope;
use mindora_tests::amqp::*;
use mindora_tests::otlp::{kind, OtlpReceiver, Span};
use serde_json::json;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn consumer(spans: &[Span], id: &str) -> Vec<Span> {
    let mut out: Vec<Span> = spans
        .iter()
        .filter(|s| s.kind == kind::CONSUMER && s.attr("messaging.message.id") == Some(id))
        .cloned()
        .collect();
    out.sort_by_key(|s| s.start_ns);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_headers_carry_the_trace_through_attempts_and_the_sdk_writes_them() {
    let receiver = OtlpReceiver::start().expect("receiver");
    // Before the subscriber is installed: it reads the standard variables once.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint());
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
    let _log = mindora_worker::logging::init(mindora_worker::config::LogFormat::Text);
    assert!(mindora_worker::telemetry::enabled());

    let fx = Fixture::new("trace").await;
    let log: Log = Arc::default();
    let worker = fx.start(registry(log.clone()), 4);
    // As pika publishes with `properties=BasicProperties(headers={"traceparent": ...})`.
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(format!("00-{TRACE}-{PARENT}-01").into()),
    );
    let props = BasicProperties::default()
        .with_message_id("pika-1".into())
        .with_headers(headers.clone());
    let mut ok = Envelope::new("test.record", vec![json!(1)]);
    ok.id = "pika-1".into();
    fx.publish_raw(&serde_json::to_vec(&ok).unwrap(), props)
        .await;
    let mut flaky = Envelope::new("test.flaky", vec![json!(2)]);
    flaky.id = "pika-2".into();
    fx.publish_raw(
        &serde_json::to_vec(&flaky).unwrap(),
        BasicProperties::default()
            .with_message_id("pika-2".into())
            .with_headers(headers),
    )
    .await;

    let spans = wait_spans(&receiver, |s| {
        consumer(s, "pika-1").len() == 1 && consumer(s, "pika-2").len() == 3
    })
    .await;
    let one = &consumer(&spans, "pika-1")[0];
    assert_eq!(
        (one.trace_id.as_str(), one.parent_span_id.as_str()),
        (TRACE, PARENT)
    );
    assert_eq!(one.name, format!("process {}", fx.queue));
    assert_eq!(one.attr("messaging.system"), Some("rabbitmq"));
    assert_eq!(
        one.attr("messaging.destination.name"),
        Some(fx.queue.as_str())
    );
    let attempts = consumer(&spans, "pika-2");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(
            (a.trace_id.as_str(), a.parent_span_id.as_str()),
            (TRACE, PARENT)
        );
        assert_eq!(
            a.attr("mindora.job.attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(a.status, 2, "every failed attempt is an error");
    }
    assert_eq!(
        attempts[2].attr("mindora.job.outcome"),
        Some("dead_lettered")
    );

    // The SDK's publisher writes the caller's context into the message headers.
    let client = fx.client().await;
    let span = tracing::info_span!("caller", otel.kind = "producer");
    let sent = {
        use tracing::Instrument;
        async {
            let mut env = Envelope::new("test.record", vec![json!(3)]);
            env.id = "sdk-1".into();
            client.publish(&fx.queue, &env).await.expect("publish");
            tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current())
        }
        .instrument(span)
        .await
    };
    use opentelemetry::trace::TraceContextExt;
    let caller = sent.span().span_context().clone();
    let spans = wait_spans(&receiver, |s| !consumer(s, "sdk-1").is_empty()).await;
    let got = &consumer(&spans, "sdk-1")[0];
    assert_eq!(got.trace_id, caller.trace_id().to_string());
    assert_eq!(got.parent_span_id, caller.span_id().to_string());
    // A real pika publisher with `opentelemetry-instrumentation-pika` (the FastAPI example's
    // venv): its PRODUCER span is the parent of the worker's attempt.
    let venv = mindora_tests::cache_dir().join("venv-fastapi/bin/python");
    let body = serde_json::to_string(&{
        let mut e = Envelope::new("test.record", vec![json!(4)]);
        e.id = "pika-real".into();
        e
    })
    .unwrap();
    let out = std::process::Command::new(&venv)
        .arg("-c")
        .arg(PIKA_PRODUCER)
        .env("EP", receiver.http_endpoint())
        .env("Q", &fx.queue)
        .env("BODY", body)
        .output()
        .expect("python with pika");
    assert!(out.status.success(), "pika producer: {out:?}");
    let spans = wait_spans(&receiver, |s| !consumer(s, "pika-real").is_empty()).await;
    let got = &consumer(&spans, "pika-real")[0];
    let producer = spans
        .iter()
        .find(|s| s.span_id == got.parent_span_id)
        .unwrap_or_else(|| panic!("no parent for {got:#?}"));
    assert_eq!(producer.kind, kind::PRODUCER, "{producer:#?}");
    assert_eq!(producer.service, "pika-producer");
    assert_eq!(producer.trace_id, got.trace_id);

    // The rq SDK writes it into `job.meta`, where Python's instrumentation would.
    let db = mindora_tests::RedisDb::lease().expect("redis db");
    let rq = mindora_sdk::Client::connect(&db.url()).await.expect("sdk");
    let span = tracing::info_span!("enqueuer", otel.kind = "producer");
    let caller = {
        use tracing::Instrument;
        async {
            let opts = mindora_sdk::EnqueueOptions {
                job_id: Some("traced-rq".into()),
                ..Default::default()
            };
            rq.enqueue("default", "mindora.noop", vec![], Default::default(), opts)
                .await
                .expect("enqueue");
            tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current())
        }
        .instrument(span)
        .await
    };
    let meta = rq
        .job("traced-rq")
        .await
        .expect("job")
        .meta(mindora_sdk::Serializer::Pickle);
    let sc = caller.span().span_context().clone();
    assert_eq!(
        meta.get("traceparent").and_then(|v| v.as_str()),
        Some(format!("00-{}-{}-01", sc.trace_id(), sc.span_id()).as_str()),
        "meta {meta:?}"
    );
    assert_eq!(receiver.refused(), 0);
    client.close().await.ok();
    worker.stop().await;
    fx.cleanup().await;
}

/// A producer as a Python team writes it: pika, instrumented, exporting over OTLP/HTTP.
const PIKA_PRODUCER: &str = r#"
import os, pika
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pika import PikaInstrumentor
tp = TracerProvider(resource=Resource.create({"service.name": "pika-producer"}))
tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["EP"] + "/v1/traces")))
trace.set_tracer_provider(tp)
PikaInstrumentor().instrument()
conn = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
ch = conn.channel()
ch.basic_publish("", os.environ["Q"], os.environ["BODY"].encode(),
                 pika.BasicProperties(message_id="pika-real", content_type="application/json"))
conn.close()
tp.shutdown()
"#;

async fn wait_spans(receiver: &OtlpReceiver, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    for _ in 0..300 {
        let spans = receiver.spans();
        if done(&spans) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "spans not received in time: {:#?}",
        mindora_tests::otlp::summary(&receiver.spans())
    );
}
