//! An OTLP trace receiver for the tests: it decodes every request with the official
//! OpenTelemetry protobuf definitions (`opentelemetry-proto`), over gRPC (tonic, the
//! `TraceService/Export` method) and HTTP/protobuf (`POST /v1/traces`), and keeps the spans.
//! A request that does not decode as an `ExportTraceServiceRequest` is refused and counted,
//! so a test sees a wire-format error instead of a silently empty trace.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// One received span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of its resource.
    pub service: String,
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id (empty for a root).
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// OTLP kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: HashMap<String, String>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Status message.
    pub status_message: String,
    /// Event names with their attributes.
    pub events: Vec<(String, HashMap<String, String>)>,
    /// Start and end, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
    /// `grpc` or `http`: how it arrived.
    pub protocol: &'static str,
}

impl Span {
    /// An attribute as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// OTLP span kinds.
pub mod kind {
    /// INTERNAL.
    pub const INTERNAL: i32 = 1;
    /// SERVER.
    pub const SERVER: i32 = 2;
    /// CLIENT.
    pub const CLIENT: i32 = 3;
    /// PRODUCER.
    pub const PRODUCER: i32 = 4;
    /// CONSUMER.
    pub const CONSUMER: i32 = 5;
}

#[derive(Default)]
struct Store {
    spans: Vec<Span>,
    refused: usize,
    requests: usize,
}

type Shared = Arc<Mutex<Store>>;

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    http: SocketAddr,
    grpc: SocketAddr,
    store: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for OtlpReceiver {
    /// Without waiting, so a test may drop it inside its own async runtime.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl OtlpReceiver {
    /// Starts both endpoints on free loopback ports.
    pub fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = Shared::default();
        let http_l = TcpListener::bind("127.0.0.1:0").context("binding OTLP/HTTP")?;
        let grpc_l = TcpListener::bind("127.0.0.1:0").context("binding OTLP/gRPC")?;
        let (http, grpc) = (http_l.local_addr()?, grpc_l.local_addr()?);
        http_l.set_nonblocking(true)?;
        grpc_l.set_nonblocking(true)?;
        let s = store.clone();
        runtime.spawn(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let s = s.clone();
                    async move { http_export(&s, &headers, &body) }
                }),
            );
            if let Ok(l) = tokio::net::TcpListener::from_std(http_l) {
                let _ = axum::serve(l, app).await;
            }
        });
        let s = store.clone();
        runtime.spawn(async move {
            let Ok(l) = tokio::net::TcpListener::from_std(grpc_l) else {
                return;
            };
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(s)))
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(OtlpReceiver {
            http,
            grpc,
            store,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:port` of OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `http://127.0.0.1:port` of OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// Requests that did not decode (a wire-format error of the sender).
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// Export requests received.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Waits until `done` holds for the spans received, and returns them.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Span]) -> bool,
    ) -> Result<Vec<Span>> {
        crate::wait_for(timeout, what, || {
            let spans = self.spans();
            Ok(done(&spans).then_some(spans))
        })
        .with_context(|| format!("spans received: {:#?}", summary(&self.spans())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `name kind trace/span<-parent` lines, for failure messages.
pub fn summary(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} [{}] k{} {}/{}<-{}",
                s.name, s.service, s.kind, s.trace_id, s.span_id, s.parent_span_id
            )
        })
        .collect()
}

fn http_export(store: &Shared, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let protobuf = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    s.requests += 1;
    match ExportTraceServiceRequest::decode(body)
        .ok()
        .filter(|_| protobuf)
    {
        Some(req) => {
            s.spans.extend(flatten(req, "http"));
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        None => {
            s.refused += 1;
            (StatusCode::BAD_REQUEST, Vec::new())
        }
    }
}

struct Grpc(Shared);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        s.spans.extend(flatten(request.into_inner(), "grpc"));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn flatten(req: ExportTraceServiceRequest, protocol: &'static str) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for sp in ss.spans {
                let status = sp.status.unwrap_or_default();
                out.push(Span {
                    service: service.clone(),
                    trace_id: hex(&sp.trace_id),
                    span_id: hex(&sp.span_id),
                    parent_span_id: hex(&sp.parent_span_id),
                    name: sp.name,
                    kind: sp.kind,
                    attributes: attrs(&sp.attributes),
                    status: status.code,
                    status_message: status.message,
                    events: sp
                        .events
                        .into_iter()
                        .map(|e| (e.name, attrs(&e.attributes)))
                        .collect(),
                    start_ns: sp.start_time_unix_nano,
                    end_ns: sp.end_time_unix_nano,
                    protocol,
                });
            }
        }
    }
    out
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
