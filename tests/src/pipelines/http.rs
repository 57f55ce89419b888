//! The HTTP/1.1 + HTTP/2 server under the fake OpenAI, Elasticsearch and Qdrant services.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Request, Response};
use mindora_sdk::wire::trace::valid_traceparent;
use serde_json::Value;

use super::Gate;

/// A request as the fake servers see it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The W3C `traceparent` header ("" when absent), or the reason it breaks the W3C Trace
    /// Context format (version 00 as our clients send it, then the SDK's own shape check).
    pub fn traceparent(&self) -> Result<String, String> {
        let v = self.header("traceparent");
        if v.is_empty() || (v.starts_with("00-") && valid_traceparent(v)) {
            Ok(v.to_string())
        } else {
            Err(format!("malformed traceparent {v:?}"))
        }
    }

    /// Keeps this request's `traceparent` in `seen`, or a malformed one in `violations`.
    pub fn record_traceparent(&self, seen: &mut Vec<String>, violations: &mut Vec<String>) {
        match self.traceparent() {
            Ok(tp) => seen.push(tp),
            Err(v) => violations.push(v),
        }
    }
}

/// A response, with optional HTTP/2 trailers (gRPC status).
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub trailers: Option<Vec<(String, String)>>,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Self {
        Resp {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(v.to_string()),
            trailers: None,
        }
    }
}

/// What a fake server answers to each request.
pub type Handler = Arc<dyn Fn(Req) -> Resp + Send + Sync>;

/// Serves `handler` over HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak) on a free
/// loopback port until the runtime ends. Each answer passes the returned [`Gate`] after the
/// handler ran (open unless a test holds it).
pub async fn serve(handler: Handler) -> (SocketAddr, Gate) {
    let gate = Gate::default();
    let addr = serve_gated(gate.clone(), handler).await;
    (addr, gate)
}

async fn serve_gated(gate: Gate, handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let gate = gate.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let r = Req {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().unwrap_or("").to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let path = r.path.clone();
                        let out = handler(r);
                        gate.after(&path).await;
                        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                            vec![Ok(Frame::data(out.body))];
                        if let Some(t) = out.trailers {
                            let mut map = HeaderMap::new();
                            for (k, v) in t {
                                map.insert(
                                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            frames.push(Ok(Frame::trailers(map)));
                        }
                        let mut resp =
                            Response::new(StreamBody::new(futures::stream::iter(frames)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(out.status).unwrap();
                        for (k, v) in out.headers {
                            resp.headers_mut().insert(
                                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}
