//! A fake Qdrant speaking gRPC (qdrant-client's own protobuf messages).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use qdrant_client::qdrant as q;

use super::super::{serve, Gate, Req, Resp};

/// A stored point: vector and payload.
pub type StoredPoint = (Vec<f32>, HashMap<String, q::Value>);

#[derive(Default)]
pub struct QdrantState {
    /// collection -> dims
    pub collections: HashMap<String, u64>,
    /// collection -> distance it was created with (`q::Distance` as on the wire)
    pub distances: HashMap<String, i32>,
    /// collection -> point id -> (vector, payload)
    pub points: HashMap<String, HashMap<String, StoredPoint>>,
    pub violations: Vec<String>,
    /// The `traceparent` header of every request, in order ("" when none was sent).
    pub traceparents: Vec<String>,
    pub calls: Vec<String>,
}

impl QdrantState {
    pub fn points_of(&self, collection: &str, document_id: &str) -> usize {
        self.points.get(collection).map_or(0, |p| {
            p.values()
                .filter(|(_, pl)| payload_str(pl, "document_id") == Some(document_id.to_string()))
                .count()
        })
    }
}

fn payload_str(p: &HashMap<String, q::Value>, key: &str) -> Option<String> {
    match p.get(key).and_then(|v| v.kind.as_ref()) {
        Some(q::value::Kind::StringValue(s)) => Some(s.clone()),
        Some(q::value::Kind::IntegerValue(i)) => Some(i.to_string()),
        _ => None,
    }
}

pub struct FakeQdrant {
    pub url: String,
    /// Holds answers on a test's request (see [`Gate`]).
    pub gate: Gate,
    pub state: Arc<Mutex<QdrantState>>,
}

fn grpc_ok<M: Message>(m: &M) -> Resp {
    let msg = m.encode_to_vec();
    let mut body = Vec::with_capacity(msg.len() + 5);
    body.push(0);
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    Resp {
        status: 200,
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: Bytes::from(body),
        trailers: Some(vec![("grpc-status".into(), "0".into())]),
    }
}

fn grpc_err(code: u8, message: &str) -> Resp {
    Resp {
        status: 200,
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: Bytes::new(),
        trailers: Some(vec![
            ("grpc-status".into(), code.to_string()),
            ("grpc-message".into(), message.replace('\n', " ")),
        ]),
    }
}

fn unframe(body: &Bytes) -> Result<&[u8], String> {
    if body.len() < 5 {
        return Err("gRPC body shorter than the 5-byte frame header".into());
    }
    if body[0] != 0 {
        return Err("compressed gRPC frame".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != len + 5 {
        return Err(format!(
            "gRPC frame length {len} but body {}",
            body.len() - 5
        ));
    }
    Ok(&body[5..])
}

fn condition_holds(c: &q::Condition, payload: &HashMap<String, q::Value>) -> Result<bool, String> {
    match &c.condition_one_of {
        Some(q::condition::ConditionOneOf::Field(f)) => {
            match f.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                Some(q::r#match::MatchValue::Keyword(k)) => {
                    Ok(payload_str(payload, &f.key).as_deref() == Some(k.as_str()))
                }
                other => Err(format!("unsupported match {other:?}")),
            }
        }
        other => Err(format!("unsupported condition {other:?}")),
    }
}

fn vector_len(p: &q::PointStruct) -> Option<Vec<f32>> {
    match p.vectors.as_ref()?.vectors_options.as_ref()? {
        q::vectors::VectorsOptions::Vector(v) => {
            #[allow(deprecated)]
            if !v.data.is_empty() {
                return Some(v.data.clone());
            }
            match v.vector.as_ref()? {
                q::vector::Vector::Dense(d) => Some(d.data.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn point_id(p: &Option<q::PointId>) -> Option<String> {
    match p.as_ref()?.point_id_options.as_ref()? {
        q::point_id::PointIdOptions::Uuid(u) => {
            uuid::Uuid::parse_str(u).ok().map(|u| u.to_string())
        }
        q::point_id::PointIdOptions::Num(n) => Some(n.to_string()),
    }
}

pub async fn qdrant() -> FakeQdrant {
    let state = Arc::new(Mutex::new(QdrantState::default()));
    let s = state.clone();
    let (addr, gate) = serve(Arc::new(move |r: Req| {
        let mut guard = s.lock().unwrap();
        let st = &mut *guard;
        r.record_traceparent(&mut st.traceparents, &mut st.violations);
        st.calls.push(r.path.clone());
        if !r.header("content-type").starts_with("application/grpc") || r.method != "POST" {
            st.violations.push(format!(
                "{} {} content-type {:?}",
                r.method,
                r.path,
                r.header("content-type")
            ));
            return grpc_err(12, "not gRPC");
        }
        if r.header("te") != "trailers" {
            st.violations
                .push(format!("{}: missing te: trailers", r.path));
        }
        let msg = match unframe(&r.body) {
            Ok(m) => m.to_vec(),
            Err(e) => {
                st.violations.push(e.clone());
                return grpc_err(13, &e);
            }
        };
        let time = 0.001;
        match r.path.as_str() {
            "/qdrant.Collections/CollectionExists" => {
                let Ok(req) = q::CollectionExistsRequest::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                let exists = st.collections.contains_key(&req.collection_name);
                grpc_ok(&q::CollectionExistsResponse {
                    result: Some(q::CollectionExists { exists }),
                    time,
                })
            }
            "/qdrant.Collections/Create" => {
                let Ok(req) = q::CreateCollection::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                let params = req.vectors_config.and_then(|v| v.config);
                let Some(q::vectors_config::Config::Params(p)) = params else {
                    st.violations
                        .push("create without single vector params".into());
                    return grpc_err(3, "Wrong input: vectors config missing");
                };
                let known = matches!(
                    q::Distance::try_from(p.distance),
                    Ok(q::Distance::Cosine
                        | q::Distance::Euclid
                        | q::Distance::Dot
                        | q::Distance::Manhattan)
                );
                if p.size == 0 || !known {
                    st.violations.push(format!(
                        "create with size {} distance {}",
                        p.size, p.distance
                    ));
                }
                if st.collections.contains_key(&req.collection_name) {
                    return grpc_err(
                        3,
                        &format!(
                            "Wrong input: Collection `{}` already exists!",
                            req.collection_name
                        ),
                    );
                }
                st.collections.insert(req.collection_name.clone(), p.size);
                st.distances.insert(req.collection_name.clone(), p.distance);
                grpc_ok(&q::CollectionOperationResponse { result: true, time })
            }
            "/qdrant.Collections/Get" => {
                let Ok(req) = q::GetCollectionInfoRequest::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                let (Some(&size), Some(&distance)) = (
                    st.collections.get(&req.collection_name),
                    st.distances.get(&req.collection_name),
                ) else {
                    return grpc_err(
                        5,
                        &format!(
                            "Not found: Collection `{}` doesn't exist!",
                            req.collection_name
                        ),
                    );
                };
                let points = st
                    .points
                    .get(&req.collection_name)
                    .map_or(0, |p| p.len() as u64);
                let info = q::CollectionInfo {
                    status: q::CollectionStatus::Green as i32,
                    points_count: Some(points),
                    segments_count: 1,
                    config: Some(q::CollectionConfig {
                        params: Some(q::CollectionParams {
                            vectors_config: Some(q::VectorsConfig {
                                config: Some(q::vectors_config::Config::Params(q::VectorParams {
                                    size,
                                    distance,
                                    ..Default::default()
                                })),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                grpc_ok(&q::GetCollectionInfoResponse {
                    result: Some(info),
                    time,
                })
            }
            "/qdrant.Points/Upsert" => {
                let Ok(req) = q::UpsertPoints::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                if req.wait != Some(true) {
                    st.violations.push("upsert without wait=true".into());
                }
                let Some(&dims) = st.collections.get(&req.collection_name) else {
                    return grpc_err(
                        5,
                        &format!(
                            "Not found: Collection `{}` doesn't exist!",
                            req.collection_name
                        ),
                    );
                };
                let mut staged = Vec::new();
                for p in &req.points {
                    let Some(id) = point_id(&p.id) else {
                        st.violations.push("point without id".into());
                        return grpc_err(3, "Wrong input: point id missing");
                    };
                    let Some(v) = vector_len(p) else {
                        return grpc_err(3, "Wrong input: no dense vector");
                    };
                    if v.len() as u64 != dims {
                        return grpc_err(
                            3,
                            &format!(
                                "Wrong input: Vector dimension error: expected dim: {dims}, got {}",
                                v.len()
                            ),
                        );
                    }
                    for k in [
                        "document_id",
                        "chunk_index",
                        "text",
                        "run_id",
                        "heading_path",
                        "page",
                    ] {
                        if !p.payload.contains_key(k) {
                            st.violations.push(format!("point payload without {k}"));
                        }
                    }
                    staged.push((id, (v, p.payload.clone())));
                }
                let coll = st.points.entry(req.collection_name.clone()).or_default();
                let n = staged.len() as u64;
                coll.extend(staged);
                grpc_ok(&q::PointsOperationResponse {
                    result: Some(q::UpdateResult {
                        operation_id: Some(n),
                        status: q::UpdateStatus::Completed as i32,
                    }),
                    time,
                    usage: None,
                })
            }
            "/qdrant.Points/Delete" => {
                let Ok(req) = q::DeletePoints::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                if req.wait != Some(true) {
                    st.violations.push("delete without wait=true".into());
                }
                let Some(q::points_selector::PointsSelectorOneOf::Filter(f)) =
                    req.points.and_then(|p| p.points_selector_one_of)
                else {
                    st.violations.push("delete without filter".into());
                    return grpc_err(3, "filter expected");
                };
                let coll = st.points.entry(req.collection_name.clone()).or_default();
                let mut err = None;
                coll.retain(|_, (_, payload)| {
                    let must = f.must.iter().all(|c| {
                        condition_holds(c, payload).unwrap_or_else(|e| {
                            err = Some(e);
                            false
                        })
                    });
                    let not = f.must_not.iter().any(|c| {
                        condition_holds(c, payload).unwrap_or_else(|e| {
                            err = Some(e);
                            false
                        })
                    });
                    !must || not
                });
                if let Some(e) = err {
                    st.violations.push(e);
                }
                grpc_ok(&q::PointsOperationResponse {
                    result: Some(q::UpdateResult {
                        operation_id: Some(1),
                        status: q::UpdateStatus::Completed as i32,
                    }),
                    time,
                    usage: None,
                })
            }
            other => {
                st.violations
                    .push(format!("unexpected gRPC method {other}"));
                grpc_err(12, "unimplemented")
            }
        }
    }))
    .await;
    FakeQdrant {
        url: format!("http://{addr}"),
        state,
        gate,
    }
}
