//! Result stream entries (`rq:results:<id>`, `rq.results.Result`): one `XADD` per finished
//! execution, newest last, trimmed to about ten.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use super::serializer::{self, CodecError, Serializer};

/// `rq.results.Result.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultType {
    /// The job returned.
    Successful = 1,
    /// The job raised.
    Failed = 2,
    /// The job was stopped.
    Stopped = 3,
    /// The job failed and was retried (rq 3.0).
    Retried = 4,
    /// The job failed with no retries left (rq 3.0).
    MaxRetriesExceeded = 5,
}

impl ResultType {
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "1" => ResultType::Successful,
            "2" => ResultType::Failed,
            "3" => ResultType::Stopped,
            "4" => ResultType::Retried,
            "5" => ResultType::MaxRetriesExceeded,
            _ => return None,
        })
    }
}

/// One decoded result entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultEntry {
    /// Outcome.
    pub kind: ResultType,
    /// The return value, for successful results.
    pub return_value: Option<Value>,
    /// The error text, for failures (rq's `exc_string`).
    pub exc_string: Option<String>,
    /// Worker that produced it.
    pub worker_name: String,
    /// Execution id it belongs to.
    pub execution_id: Option<String>,
}

/// Fields of a success entry, in rq's order.
pub fn success_fields(
    serializer: Serializer,
    value: &Value,
    worker_name: &str,
    execution_id: &str,
    started: &str,
    ended: &str,
) -> Result<Vec<(&'static str, String)>, CodecError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(serializer.dumps(value)?);
    Ok(vec![
        ("type", (ResultType::Successful as u8).to_string()),
        ("worker_name", worker_name.to_string()),
        ("return_value", encoded),
        ("execution_id", execution_id.to_string()),
        ("execution_started_at", started.to_string()),
        ("execution_ended_at", ended.to_string()),
    ])
}

/// Fields of a success entry whose return value is already serialized (bytes in the job's
/// serializer, e.g. produced by a Python process), in rq's order.
pub fn success_fields_encoded(
    serialized: &[u8],
    worker_name: &str,
    execution_id: &str,
    started: &str,
    ended: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("type", (ResultType::Successful as u8).to_string()),
        ("worker_name", worker_name.to_string()),
        (
            "return_value",
            base64::engine::general_purpose::STANDARD.encode(serialized),
        ),
        ("execution_id", execution_id.to_string()),
        ("execution_started_at", started.to_string()),
        ("execution_ended_at", ended.to_string()),
    ]
}

/// Fields of a failure entry, in rq's order.
pub fn failure_fields(
    kind: ResultType,
    exc_string: &str,
    worker_name: &str,
    execution_id: &str,
    started: &str,
    ended: &str,
) -> Result<Vec<(&'static str, String)>, CodecError> {
    let mut f = vec![
        ("type", (kind as u8).to_string()),
        ("worker_name", worker_name.to_string()),
        ("exc_string", encode_exc_string(exc_string)?),
    ];
    if !execution_id.is_empty() {
        f.push(("execution_id", execution_id.to_string()));
        f.push(("execution_started_at", started.to_string()));
        f.push(("execution_ended_at", ended.to_string()));
    }
    Ok(f)
}

/// `base64(zlib(exc_string))`, as `Result.serialize`.
pub fn encode_exc_string(s: &str) -> Result<String, CodecError> {
    Ok(base64::engine::general_purpose::STANDARD.encode(serializer::compress(s.as_bytes())?))
}

/// Reads one stream entry's fields.
pub fn parse_entry(
    fields: &HashMap<String, Vec<u8>>,
    serializer: Serializer,
) -> Result<ResultEntry, CodecError> {
    let text = |k: &str| {
        fields
            .get(k)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    };
    let kind = text("type")
        .and_then(|t| ResultType::from_code(&t))
        .ok_or_else(|| CodecError::Shape("result entry without a valid type".into()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let return_value = match text("return_value") {
        Some(rv) => {
            let bytes = b64
                .decode(rv.as_bytes())
                .map_err(|e| CodecError::Shape(format!("return_value is not base64: {e}")))?;
            Some(serializer.loads(&bytes)?)
        }
        None => None,
    };
    let exc_string = match text("exc_string") {
        Some(exc) => {
            let bytes = b64
                .decode(exc.as_bytes())
                .map_err(|e| CodecError::Shape(format!("exc_string is not base64: {e}")))?;
            Some(String::from_utf8_lossy(&serializer::decompress_or_raw(&bytes)).into_owned())
        }
        None => None,
    };
    Ok(ResultEntry {
        kind,
        return_value,
        exc_string,
        worker_name: text("worker_name").unwrap_or_default(),
        execution_id: text("execution_id"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_python_pickled_result() {
        // rq 3.0 wrote this for `return {"sum": 5}`.
        let mut f = HashMap::new();
        f.insert("type".to_string(), b"1".to_vec());
        f.insert(
            "return_value".to_string(),
            b"gAWVDAAAAAAAAAB9lIwDc3VtlEsFcy4=".to_vec(),
        );
        let e = parse_entry(&f, Serializer::Pickle).expect("parses");
        assert_eq!(e.return_value, Some(json!({"sum": 5})));
    }

    #[test]
    fn failure_round_trips() {
        let fields =
            failure_fields(ResultType::Failed, "boom", "w", "e", "1.0", "2.0").expect("encodes");
        let map: HashMap<String, Vec<u8>> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_bytes()))
            .collect();
        let e = parse_entry(&map, Serializer::Json).expect("parses");
        assert_eq!(e.exc_string.as_deref(), Some("boom"));
        assert_eq!(e.kind, ResultType::Failed);
    }
}
