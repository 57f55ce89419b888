//! A stand-in for Ollama's OpenAI-compatible `POST /v1/embeddings`, answering and refusing as
//! Ollama's `openai` middleware does (ollama/ollama `middleware/openai.go`, `openai/openai.go`):
//! request `{model, input: string | [string], encoding_format?: "float" | "base64",
//! dimensions?}`, no authentication (any `Authorization` is ignored), errors as
//! `{"error": {"message", "type", "param": null, "code": null}}`, an unknown model a 404
//! `model "x" not found, try pulling it first`; answer `{object: "list", data: [{object:
//! "embedding", embedding, index}], model, usage: {prompt_tokens, total_tokens}}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use super::super::{serve, Gate, Req, Resp};
use super::fake_vector;

pub struct OllamaState {
    /// Pulled models and their vector sizes (`bge-m3` answers as `bge-m3:latest` too).
    pub models: HashMap<String, usize>,
    pub embedding_requests: usize,
    pub embedded_texts: usize,
    /// Models named by the requests, in order.
    pub requested_models: Vec<String>,
    /// Whether each request carried an `Authorization` header (Ollama ignores it).
    pub authorization: Vec<bool>,
    /// Requests Ollama would refuse, with its answer's message.
    pub violations: Vec<String>,
}

pub struct FakeOllama {
    /// Base URL as the worker takes it (`http://127.0.0.1:port/v1`).
    pub url: String,
    /// Holds answers on a test's request (see [`Gate`]).
    pub gate: Gate,
    pub state: Arc<Mutex<OllamaState>>,
}

/// Ollama's `openai.NewError`: 400 is `invalid_request_error`, 404 `not_found_error`, the rest
/// `api_error`; `param` and `code` are always null.
fn ollama_error(status: u16, message: &str) -> Resp {
    let kind = match status {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    Resp::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
}

/// The model's name as Ollama resolves it (`bge-m3` is `bge-m3:latest`).
fn tagged(model: &str) -> String {
    if model.contains(':') {
        model.to_string()
    } else {
        format!("{model}:latest")
    }
}

/// `v` cut to `dims` and scaled back to unit length, as Ollama does for `dimensions`.
fn truncated(mut v: Vec<f32>, dims: usize) -> Vec<f32> {
    v.truncate(dims);
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter().map(|x| x / n).collect()
}

fn refuse(st: &mut OllamaState, status: u16, message: &str) -> Resp {
    st.violations.push(format!("{status}: {message}"));
    ollama_error(status, message)
}

/// Serves `bge-m3` (1024 dimensions), as the stack's `ollama-pull` leaves it.
pub async fn ollama() -> FakeOllama {
    let state = Arc::new(Mutex::new(OllamaState {
        models: HashMap::from([("bge-m3:latest".to_string(), 1024)]),
        embedding_requests: 0,
        embedded_texts: 0,
        requested_models: Vec::new(),
        authorization: Vec::new(),
        violations: Vec::new(),
    }));
    let s = state.clone();
    let (addr, gate) = serve(Arc::new(move |r: Req| {
        let mut guard = s.lock().unwrap();
        let st = &mut *guard;
        if r.method != "POST" || r.path != "/v1/embeddings" {
            st.violations.push(format!("{} {}", r.method, r.path));
            return Resp { status: 404, headers: vec![("content-type".into(), "text/plain".into())], body: "404 page not found".into(), trailers: None };
        }
        st.authorization.push(!r.header("authorization").is_empty());
        let body: Value = match serde_json::from_slice(&r.body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return refuse(st, 400, "json: cannot unmarshal into Go value of type openai.EmbedRequest"),
            Err(e) => return refuse(st, 400, &e.to_string()),
        };
        let format = match &body["encoding_format"] {
            Value::Null => String::new(),
            Value::String(f) => f.clone(),
            other => return refuse(st, 400, &format!("json: cannot unmarshal {other} into Go struct field EmbedRequest.encoding_format of type string")),
        };
        let base64 = format.eq_ignore_ascii_case("base64");
        if !format.is_empty() && !base64 && !format.eq_ignore_ascii_case("float") {
            return refuse(st, 400, &format!("Invalid value for 'encoding_format' = {format}. Supported values: ['float', 'base64']."));
        }
        let inputs: Vec<String> = match &body["input"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(a) if a.is_empty() => return refuse(st, 400, "invalid input"),
            Value::Array(a) if a.iter().all(Value::is_string) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            Value::Array(_) => return refuse(st, 400, "invalid input type"),
            Value::Null => return refuse(st, 400, "invalid input"),
            _ => return refuse(st, 400, "invalid input type"),
        };
        let model = body["model"].as_str().unwrap_or_default().to_string();
        st.requested_models.push(model.clone());
        let Some(&native) = st.models.get(&tagged(&model)) else {
            return refuse(st, 404, &format!("model \"{model}\" not found, try pulling it first"));
        };
        let dims = match body.get("dimensions") {
            None | Some(Value::Null) => native,
            Some(d) => match d.as_u64() {
                Some(0) => native,
                Some(d) if d as usize <= native => d as usize,
                _ => return refuse(st, 400, &format!("invalid dimensions {d}: the model returns {native}")),
            },
        };
        st.embedding_requests += 1;
        st.embedded_texts += inputs.len();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = fake_vector(t, native);
                let v = if dims < native { truncated(v, dims) } else { v };
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "embedding": embedding, "index": i})
            })
            .collect();
        let tokens: usize = inputs.iter().map(|t| t.chars().count() / 3 + 1).sum();
        Resp::json(200, &json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    }))
    .await;
    FakeOllama {
        url: format!("http://{addr}/v1"),
        gate,
        state,
    }
}
