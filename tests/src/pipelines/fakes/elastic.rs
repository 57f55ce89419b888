//! A fake Elasticsearch: index templates, bulk, delete_by_query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::super::{serve, Gate, Req, Resp};

#[derive(Default)]
pub struct EsState {
    pub templates: HashMap<String, Value>,
    /// index -> id -> source
    pub indices: HashMap<String, HashMap<String, Value>>,
    pub violations: Vec<String>,
    /// The `traceparent` header of every request, in order ("" when none was sent).
    pub traceparents: Vec<String>,
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
    /// Holds answers on a test's request (see [`Gate`]).
    pub gate: Gate,
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
        if let Some(subfields) = m.get("fields") {
            let subfields = subfields
                .as_object()
                .ok_or(format!("{field}: fields is not an object"))?;
            for (sub, sm) in subfields {
                if !["keyword", "text"].contains(&sm["type"].as_str().unwrap_or("")) {
                    return Err(format!("{field}.{sub}: unsupported subfield type"));
                }
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
    let (addr, gate) = serve(Arc::new(move |r: Req| {
        let mut guard = s.lock().unwrap();
        let st = &mut *guard;
        r.record_traceparent(&mut st.traceparents, &mut st.violations);
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
                    // Chunk documents carry their heading path as an array of titles.
                    if let Some(hp) = src.get("heading_path") {
                        if !hp.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                            st.violations.push(format!("heading_path is not an array of strings: {hp}"));
                        }
                    }
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
        gate,
    }
}
