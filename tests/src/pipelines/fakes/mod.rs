//! Fake OpenAI-compatible, Elasticsearch and Qdrant servers that validate requests against the
//! real wire formats and answer as the real services do (including partial failures).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use qdrant_client::qdrant as q;
use serde_json::{json, Value};

use super::{serve, Req, Resp};

/// Deterministic unit vector for a text (FNV-1a seeded xorshift).
pub fn fake_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut v = Vec::with_capacity(dims);
    for _ in 0..dims {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        v.push(((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32);
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter().map(|x| x / n).collect()
}

// ---------------------------------------------------------------- OpenAI

#[derive(Default)]
pub struct OpenAiState {
    /// Statuses to answer before serving normally (429, 500…).
    pub fail_with: VecDeque<u16>,
    /// Always answer 500.
    pub always_fail: bool,
    pub embedding_requests: usize,
    pub embedded_texts: usize,
    pub chat_requests: usize,
    pub max_batch: usize,
    pub violations: Vec<String>,
    /// Dimensions returned regardless of model (None: 768 for models containing "768", else 1536).
    pub force_dims: Option<usize>,
}

pub struct FakeOpenAi {
    pub url: String,
    pub state: Arc<Mutex<OpenAiState>>,
}

fn openai_error(status: u16, kind: &str, msg: &str) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"message": msg, "type": kind, "param": null, "code": null}}),
    )
}

pub async fn openai() -> FakeOpenAi {
    let state = Arc::new(Mutex::new(OpenAiState::default()));
    let s = state.clone();
    let addr = serve(Arc::new(move |r: Req| {
        let mut st = s.lock().unwrap();
        if !r.header("authorization").starts_with("Bearer ") {
            st.violations.push(format!("{} without bearer token", r.path));
            return openai_error(401, "invalid_request_error", "missing api key");
        }
        if r.method != "POST" || !r.header("content-type").starts_with("application/json") {
            st.violations.push(format!("{} {} with content-type {:?}", r.method, r.path, r.header("content-type")));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
            st.violations.push("body is not JSON".into());
            return openai_error(400, "invalid_request_error", "body is not JSON");
        };
        if st.always_fail {
            return openai_error(500, "server_error", "The server had an error");
        }
        if let Some(code) = st.fail_with.pop_front() {
            return if code == 429 {
                openai_error(429, "rate_limit_error", "Rate limit reached, please retry")
            } else {
                openai_error(code, "server_error", "The server had an error")
            };
        }
        let model = body["model"].as_str().unwrap_or("").to_string();
        if model.is_empty() {
            st.violations.push("no model".into());
        }
        match r.path.as_str() {
            "/v1/embeddings" => {
                let inputs: Vec<String> = match &body["input"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) if a.iter().all(Value::is_string) => {
                        a.iter().map(|v| v.as_str().unwrap().to_string()).collect()
                    }
                    other => {
                        st.violations.push(format!("bad input {other}"));
                        return openai_error(400, "invalid_request_error", "bad input");
                    }
                };
                if inputs.is_empty() || inputs.len() > 2048 || inputs.iter().any(String::is_empty) {
                    st.violations.push("empty input, empty string or more than 2048 inputs".into());
                    return openai_error(400, "invalid_request_error", "'$.input' is invalid");
                }
                st.embedding_requests += 1;
                st.embedded_texts += inputs.len();
                st.max_batch = st.max_batch.max(inputs.len());
                let dims = st
                    .force_dims
                    .or(body["dimensions"].as_u64().map(|d| d as usize))
                    .unwrap_or(if model.contains("768") { 768 } else { 1536 });
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_vector(t, dims)}))
                    .collect();
                let tokens: usize = inputs.iter().map(|t| t.len() / 4 + 1).sum();
                Resp::json(200, &json!({"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
            }
            "/v1/chat/completions" => {
                st.chat_requests += 1;
                let ok = body["messages"].as_array().is_some_and(|m| {
                    !m.is_empty() && m.iter().all(|x| x["role"].is_string() && x["content"].is_string())
                });
                if !ok {
                    st.violations.push(format!("bad messages {}", body["messages"]));
                    return openai_error(400, "invalid_request_error", "bad messages");
                }
                let user = body["messages"].as_array().unwrap().last().unwrap()["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let first_words: Vec<&str> = user.split_whitespace().skip(2).take(3).collect();
                let content = json!({"summary": format!("A document about {}.", first_words.join(" ")),
                                     "keywords": first_words}).to_string();
                Resp::json(200, &json!({
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000,
                    "model": model, "system_fingerprint": null,
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                                 "message": {"role": "assistant", "content": content, "refusal": null}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
                }))
            }
            other => {
                st.violations.push(format!("unexpected path {other}"));
                openai_error(404, "invalid_request_error", "unknown url")
            }
        }
    }))
    .await;
    FakeOpenAi {
        url: format!("http://{addr}/v1"),
        state,
    }
}

// ---------------------------------------------------------------- Elasticsearch

#[derive(Default)]
pub struct EsState {
    pub templates: HashMap<String, Value>,
    /// index -> id -> source
    pub indices: HashMap<String, HashMap<String, Value>>,
    pub violations: Vec<String>,
    pub bulk_requests: usize,
    /// Items whose text contains this are rejected with 429 once each.
    pub busy_marker_seen: HashMap<String, bool>,
    pub requests: Vec<String>,
}

impl EsState {
    /// Documents of one document id across all indices.
    pub fn docs_of(&self, document_id: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (index, docs) in &self.indices {
            for (id, src) in docs {
                if src["document_id"] == document_id {
                    out.push((format!("{index}/{id}"), src.clone()));
                }
            }
        }
        out
    }
}

pub struct FakeElastic {
    pub url: String,
    pub state: Arc<Mutex<EsState>>,
}

fn pattern_matches(pattern: &str, index: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, post)) => {
            index.starts_with(pre) && index.ends_with(post) && index.len() >= pre.len() + post.len()
        }
        None => pattern == index,
    }
}

fn es_error(status: u16, kind: &str, reason: &str) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status}),
    )
}

fn check_template(body: &Value) -> Result<(), String> {
    let patterns = body["index_patterns"]
        .as_array()
        .ok_or("index_patterns missing")?;
    if patterns.is_empty() || !patterns.iter().all(Value::is_string) {
        return Err("index_patterns must be strings".into());
    }
    let t = &body["template"];
    let analyzers = t["settings"]["analysis"]["analyzer"]
        .as_object()
        .ok_or("no analyzers")?;
    for (name, a) in analyzers {
        if a["type"] != "custom" || !a["tokenizer"].is_string() {
            return Err(format!("analyzer {name} malformed"));
        }
        for f in a["filter"].as_array().ok_or("filter list")? {
            let f = f.as_str().ok_or("filter name")?;
            if ![
                "cjk_width",
                "lowercase",
                "cjk_bigram",
                "asciifolding",
                "stop",
            ]
            .contains(&f)
            {
                return Err(format!("unknown token filter {f}"));
            }
        }
    }
    let props = t["mappings"]["properties"]
        .as_object()
        .ok_or("mappings.properties missing")?;
    for (field, m) in props {
        let ty = m["type"].as_str().ok_or(format!("{field} has no type"))?;
        if ![
            "keyword",
            "text",
            "integer",
            "long",
            "date",
            "flattened",
            "object",
            "float",
            "boolean",
        ]
        .contains(&ty)
        {
            return Err(format!("{field}: unknown type {ty}"));
        }
        if let Some(an) = m["analyzer"].as_str() {
            if !analyzers.contains_key(an) && an != "standard" {
                return Err(format!("{field}: analyzer {an} not defined"));
            }
        }
    }
    Ok(())
}

/// Value of a term query against a source.
fn term_matches(src: &Value, clause: &Value) -> bool {
    let Some(term) = clause["term"].as_object() else {
        return false;
    };
    term.iter().all(|(field, v)| {
        let want = v.get("value").unwrap_or(v);
        &src[field] == want
    })
}

pub async fn elastic() -> FakeElastic {
    let state = Arc::new(Mutex::new(EsState::default()));
    let s = state.clone();
    let addr = serve(Arc::new(move |r: Req| {
        let mut st = s.lock().unwrap();
        st.requests.push(format!("{} {}?{}", r.method, r.path, r.query));
        let ct = r.header("content-type").to_string();
        if !(r.body.is_empty() || ct.starts_with("application/json") || ct.starts_with("application/x-ndjson") || ct.contains("elasticsearch+")) {
            st.violations.push(format!("{} with content-type {ct:?}", r.path));
        }
        let segs: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        match (r.method.as_str(), segs.as_slice()) {
            ("PUT", ["_index_template", name]) => {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if let Err(e) = check_template(&body) {
                    st.violations.push(format!("template {name}: {e}"));
                    return es_error(400, "x_content_parse_exception", &e);
                }
                st.templates.insert(name.to_string(), body);
                Resp::json(200, &json!({"acknowledged": true}))
            }
            ("POST" | "PUT", [.., "_bulk"]) => {
                st.bulk_requests += 1;
                let default_index = if segs.len() == 2 { Some(segs[0].to_string()) } else { None };
                let text = String::from_utf8_lossy(&r.body).to_string();
                if !text.ends_with('\n') {
                    st.violations.push("bulk body does not end with a newline".into());
                    return es_error(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]");
                }
                let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
                let mut items = Vec::new();
                let mut errors = false;
                let mut i = 0;
                while i < lines.len() {
                    let Ok(action) = serde_json::from_str::<Value>(lines[i]) else {
                        st.violations.push(format!("bulk line {i} not JSON"));
                        return es_error(400, "x_content_parse_exception", "bad action line");
                    };
                    let Some((op, meta)) = action.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
                        st.violations.push(format!("bulk action line {i} malformed: {action}"));
                        return es_error(400, "illegal_argument_exception", "Malformed action/metadata line");
                    };
                    let op = op.clone();
                    let index = meta["_index"].as_str().map(str::to_string).or(default_index.clone()).unwrap_or_default();
                    let id = meta["_id"].as_str().unwrap_or("").to_string();
                    if op != "index" && op != "delete" {
                        st.violations.push(format!("unexpected bulk op {op}"));
                    }
                    if op == "delete" {
                        i += 1;
                        continue;
                    }
                    let Some(src_line) = lines.get(i + 1) else {
                        st.violations.push("index action without source line".into());
                        return es_error(400, "illegal_argument_exception", "source missing");
                    };
                    let src: Value = serde_json::from_str(src_line).unwrap_or(Value::Null);
                    i += 2;
                    // Which template applies (highest priority match).
                    let tmpl = st.templates.values().find(|t| {
                        t["index_patterns"].as_array().is_some_and(|p| p.iter().any(|p| pattern_matches(p.as_str().unwrap_or(""), &index)))
                    }).cloned();
                    let Some(tmpl) = tmpl else {
                        st.violations.push(format!("bulk into {index} with no matching index template"));
                        continue;
                    };
                    let props = tmpl["template"]["mappings"]["properties"].as_object().cloned().unwrap_or_default();
                    let strict = tmpl["template"]["mappings"]["dynamic"] == "strict";
                    let unknown = src.as_object().and_then(|o| o.keys().find(|k| !props.contains_key(*k)).cloned());
                    let text_field = src["text"].as_str().unwrap_or("");
                    let mut item_err: Option<(u16, &str, String)> = None;
                    if let (true, Some(f)) = (strict, unknown) {
                        item_err = Some((400, "strict_dynamic_mapping_exception", format!("mapping set to strict, dynamic introduction of [{f}] within [_doc] is not allowed")));
                    } else if text_field.contains("ES_REJECT") {
                        item_err = Some((400, "document_parsing_exception", "[1:42] failed to parse field [text]".into()));
                    } else if text_field.contains("ES_BUSY") && !st.busy_marker_seen.contains_key(&id) {
                        st.busy_marker_seen.insert(id.clone(), true);
                        item_err = Some((429, "es_rejected_execution_exception", "rejected execution of coordinating operation".into()));
                    }
                    match item_err {
                        Some((status, kind, reason)) => {
                            errors = true;
                            items.push(json!({op.clone(): {"_index": index, "_id": id, "status": status,
                                "error": {"type": kind, "reason": reason}}}));
                        }
                        None => {
                            let docs = st.indices.entry(index.clone()).or_default();
                            let existed = docs.insert(id.clone(), src).is_some();
                            items.push(json!({op.clone(): {"_index": index, "_id": id, "_version": 1,
                                "result": if existed {"updated"} else {"created"},
                                "_shards": {"total": 1, "successful": 1, "failed": 0},
                                "_seq_no": 0, "_primary_term": 1, "status": if existed {200} else {201}}}));
                        }
                    }
                }
                Resp::json(200, &json!({"took": 3, "errors": errors, "items": items}))
            }
            ("POST", [pattern, "_delete_by_query"]) => {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let filters = body["query"]["bool"]["filter"].as_array().cloned().unwrap_or_default();
                let must_not = body["query"]["bool"]["must_not"].as_array().cloned().unwrap_or_default();
                if filters.is_empty() {
                    st.violations.push(format!("delete_by_query without filter: {body}"));
                }
                let mut deleted = 0u64;
                let patterns: Vec<String> = pattern.split(',').map(str::to_string).collect();
                for (index, docs) in st.indices.iter_mut() {
                    if !patterns.iter().any(|p| pattern_matches(p, index)) {
                        continue;
                    }
                    docs.retain(|_, src| {
                        let hit = filters.iter().all(|f| term_matches(src, f)) && !must_not.iter().any(|f| term_matches(src, f));
                        if hit {
                            deleted += 1;
                        }
                        !hit
                    });
                }
                Resp::json(200, &json!({"took": 2, "timed_out": false, "total": deleted, "deleted": deleted,
                    "batches": 1, "version_conflicts": 0, "noops": 0,
                    "retries": {"bulk": 0, "search": 0}, "failures": []}))
            }
            _ => {
                st.violations.push(format!("unexpected request {} {}", r.method, r.path));
                es_error(400, "illegal_argument_exception", "unexpected")
            }
        }
    }))
    .await;
    FakeElastic {
        url: format!("http://{addr}"),
        state,
    }
}

// ---------------------------------------------------------------- Qdrant (gRPC)

/// A stored point: vector and payload.
pub type StoredPoint = (Vec<f32>, HashMap<String, q::Value>);

#[derive(Default)]
pub struct QdrantState {
    /// collection -> dims
    pub collections: HashMap<String, u64>,
    /// collection -> point id -> (vector, payload)
    pub points: HashMap<String, HashMap<String, StoredPoint>>,
    pub violations: Vec<String>,
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
    let addr = serve(Arc::new(move |r: Req| {
        let mut st = s.lock().unwrap();
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
                if p.size == 0 || p.distance != q::Distance::Cosine as i32 {
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
                grpc_ok(&q::CollectionOperationResponse { result: true, time })
            }
            "/qdrant.Collections/Get" => {
                let Ok(req) = q::GetCollectionInfoRequest::decode(msg.as_slice()) else {
                    return grpc_err(3, "decode");
                };
                let Some(&size) = st.collections.get(&req.collection_name) else {
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
                                    distance: q::Distance::Cosine as i32,
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
                    for k in ["document_id", "chunk_index", "text", "run_id"] {
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
    }
}
