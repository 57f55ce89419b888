//! A fake OpenAI-compatible API: embeddings and chat completions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::super::{serve, Gate, Req, Resp};
use super::fake_vector;

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
    /// The `traceparent` header of every request, in order ("" when none was sent).
    pub traceparents: Vec<String>,
    /// Dimensions returned regardless of model (None: 768 for models containing "768", else 1536).
    pub force_dims: Option<usize>,
}

pub struct FakeOpenAi {
    pub url: String,
    /// Holds answers on a test's request (see [`Gate`]).
    pub gate: Gate,
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
    let (addr, gate) = serve(Arc::new(move |r: Req| {
        let mut guard = s.lock().unwrap();
        let st = &mut *guard;
        r.record_traceparent(&mut st.traceparents, &mut st.violations);
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
        gate,
    }
}
