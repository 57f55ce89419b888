//! rq's two standard serializers and the job `data` payload.
//!
//! rq stores `data = zlib(serializer.dumps((func_name, instance, args, kwargs)))`; results and
//! `meta` are `serializer.dumps(value)` (results then base64-encoded, see [`super::result`]).
//! The serializer is not recorded anywhere, so rq's worker needs one flag per process; we
//! tell it from the decompressed bytes instead: pickle always starts with the PROTO opcode
//! `0x80`, a JSON payload of a tuple always starts with `[`.
//!
//! Pickle is decoded by `serde-pickle`, which interprets the data and never executes code: a
//! pickled Python object that is not plain data (it references a class) fails to decode,
//! with a message that says so.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use serde_json::{Map, Number, Value};
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value as PickleValue};

/// Which serializer a job was enqueued with; results and meta go back in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Serializer {
    /// `rq.serializers.DefaultSerializer` (pickle), rq's default.
    #[default]
    Pickle,
    /// `rq.serializers.JSONSerializer`.
    Json,
}

/// The decoded `data` of a job: what to call and with what.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCall {
    /// Dotted function name, e.g. `pipelines.process_document`.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The job's `data` field is missing or empty.
    #[error("job has no data field")]
    MissingData,
    /// Neither pickle nor JSON.
    #[error("job data is neither rq pickle nor rq JSON (first byte 0x{0:02x})")]
    UnknownFormat(u8),
    /// serde-pickle refused the bytes; typically a pickled object that is not plain data.
    #[error("undecodable pickle (only plain data - str, int, float, bool, None, bytes, list, tuple, dict, set - can be decoded; a pickled class instance or function cannot): {0}")]
    Pickle(#[from] serde_pickle::Error),
    /// The JSON payload is not valid JSON.
    #[error("undecodable JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid bytes, but not rq's `(func_name, instance, args, kwargs)` tuple.
    #[error("job data is not rq's (func_name, instance, args, kwargs) tuple: {0}")]
    Shape(String),
    /// Decoded, but holds a value JSON cannot represent.
    #[error("value cannot be represented as JSON: {0}")]
    Unrepresentable(String),
    /// zlib stream failure while compressing.
    #[error("compression failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Serializer {
    /// Tells the serializer from serialized (uncompressed) bytes.
    pub fn detect(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Err(CodecError::MissingData),
            Some(0x80) => Ok(Serializer::Pickle),
            Some(b'[') | Some(b'{') | Some(b'"') => Ok(Serializer::Json),
            Some(other) => Err(CodecError::UnknownFormat(*other)),
        }
    }

    /// `serializer.dumps(value)` for a plain value (results, meta).
    pub fn dumps(self, value: &Value) -> Result<Vec<u8>, CodecError> {
        match self {
            Serializer::Json => Ok(serde_json::to_vec(value)?),
            Serializer::Pickle => Ok(serde_pickle::value_to_vec(
                &json_to_pickle(value),
                SerOptions::new(),
            )?),
        }
    }

    /// `serializer.loads(bytes)` into a JSON value.
    pub fn loads(self, bytes: &[u8]) -> Result<Value, CodecError> {
        match self {
            Serializer::Json => Ok(serde_json::from_slice(bytes)?),
            Serializer::Pickle => {
                pickle_to_json(serde_pickle::value_from_slice(bytes, DeOptions::new())?)
            }
        }
    }

    /// The dotted path rq accepts for `--serializer`, for messages and docs.
    pub fn rq_path(self) -> &'static str {
        match self {
            Serializer::Pickle => "rq.serializers.DefaultSerializer",
            Serializer::Json => "rq.serializers.JSONSerializer",
        }
    }
}

/// zlib-compresses, as rq does for `data` and `exc_info`.
pub fn compress(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 16),
        Compression::default(),
    );
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// Undoes [`compress`]; like rq, falls back to the raw bytes when they are not zlib.
pub fn decompress_or_raw(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    match ZlibDecoder::new(bytes).read_to_end(&mut out) {
        Ok(_) => out,
        Err(_) => bytes.to_vec(),
    }
}

/// Builds a job's `data` field.
pub fn encode_job_data(serializer: Serializer, call: &JobCall) -> Result<Vec<u8>, CodecError> {
    let raw = match serializer {
        Serializer::Json => serde_json::to_vec(&Value::Array(vec![
            Value::String(call.function.clone()),
            Value::Null,
            Value::Array(call.args.clone()),
            Value::Object(call.kwargs.clone()),
        ]))?,
        Serializer::Pickle => {
            let tuple = PickleValue::Tuple(vec![
                PickleValue::String(call.function.clone()),
                PickleValue::None,
                PickleValue::Tuple(call.args.iter().map(json_to_pickle).collect()),
                json_to_pickle(&Value::Object(call.kwargs.clone())),
            ]);
            serde_pickle::value_to_vec(&tuple, SerOptions::new())?
        }
    };
    compress(&raw)
}

/// Reads a job's `data` field: tells its serializer, then decodes the call.
pub fn decode_job_data(data: &[u8]) -> Result<(Serializer, JobCall), CodecError> {
    if data.is_empty() {
        return Err(CodecError::MissingData);
    }
    let raw = decompress_or_raw(data);
    let serializer = Serializer::detect(&raw)?;
    let value = serializer.loads(&raw)?;
    let Value::Array(mut parts) = value else {
        return Err(CodecError::Shape("not a sequence".into()));
    };
    if parts.len() != 4 {
        return Err(CodecError::Shape(format!(
            "{} items instead of 4",
            parts.len()
        )));
    }
    let kwargs = parts.pop().unwrap_or(Value::Null);
    let args = parts.pop().unwrap_or(Value::Null);
    let instance = parts.pop().unwrap_or(Value::Null);
    let function = parts.pop().unwrap_or(Value::Null);
    let Value::String(function) = function else {
        return Err(CodecError::Shape("func_name is not a string".into()));
    };
    if !instance.is_null() {
        return Err(CodecError::Shape(format!(
            "job calls a method on an instance ({function}); only plain functions by name are supported"
        )));
    }
    let args = match args {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => {
            return Err(CodecError::Shape(format!(
                "args is not a sequence: {other}"
            )))
        }
    };
    let kwargs = match kwargs {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            return Err(CodecError::Shape(format!(
                "kwargs is not a mapping: {other}"
            )))
        }
    };
    Ok((
        serializer,
        JobCall {
            function,
            args,
            kwargs,
        },
    ))
}

fn number_from_f64(f: f64) -> Result<Value, CodecError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| CodecError::Unrepresentable(format!("float {f}")))
}

fn bigint_to_json(digits: String) -> Result<Value, CodecError> {
    if let Ok(i) = digits.parse::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = digits.parse::<u64>() {
        return Ok(Value::from(u));
    }
    Err(CodecError::Unrepresentable(format!(
        "integer {digits} exceeds 64 bits"
    )))
}

fn bytes_to_json(bytes: Vec<u8>) -> Result<Value, CodecError> {
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| CodecError::Unrepresentable("non-UTF-8 bytes".into()))
}

/// A pickle value as JSON; tuples and sets become arrays, dict keys that are scalars become
/// strings (as Python's `json.dumps` does).
pub fn pickle_to_json(v: PickleValue) -> Result<Value, CodecError> {
    Ok(match v {
        PickleValue::None => Value::Null,
        PickleValue::Bool(b) => Value::Bool(b),
        PickleValue::I64(i) => Value::from(i),
        PickleValue::Int(big) => bigint_to_json(big.to_string())?,
        PickleValue::F64(f) => number_from_f64(f)?,
        PickleValue::Bytes(b) => bytes_to_json(b)?,
        PickleValue::String(s) => Value::String(s),
        PickleValue::List(items) | PickleValue::Tuple(items) => Value::Array(
            items
                .into_iter()
                .map(pickle_to_json)
                .collect::<Result<_, _>>()?,
        ),
        PickleValue::Set(items) | PickleValue::FrozenSet(items) => Value::Array(
            items
                .into_iter()
                .map(|h| pickle_to_json(h.into_value()))
                .collect::<Result<_, _>>()?,
        ),
        PickleValue::Dict(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(hashable_key(k)?, pickle_to_json(v)?);
            }
            Value::Object(out)
        }
    })
}

fn hashable_key(k: HashableValue) -> Result<String, CodecError> {
    Ok(match k {
        HashableValue::String(s) => s,
        HashableValue::I64(i) => i.to_string(),
        HashableValue::Int(i) => i.to_string(),
        HashableValue::F64(f) => f.to_string(),
        HashableValue::Bool(b) => if b { "true" } else { "false" }.to_string(),
        HashableValue::None => "null".to_string(),
        HashableValue::Bytes(b) => String::from_utf8(b)
            .map_err(|_| CodecError::Unrepresentable("non-UTF-8 bytes dict key".into()))?,
        other => {
            return Err(CodecError::Unrepresentable(format!(
                "dict key {other:?} is not a scalar"
            )))
        }
    })
}

/// A JSON value as the pickle value Python would naturally hold.
pub fn json_to_pickle(v: &Value) -> PickleValue {
    match v {
        Value::Null => PickleValue::None,
        Value::Bool(b) => PickleValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => PickleValue::I64(i),
            (None, Some(f)) => PickleValue::F64(f),
            (None, None) => PickleValue::None,
        },
        Value::String(s) => PickleValue::String(s.clone()),
        Value::Array(items) => PickleValue::List(items.iter().map(json_to_pickle).collect()),
        Value::Object(map) => PickleValue::Dict(
            map.iter()
                .map(|(k, v)| (HashableValue::String(k.clone()), json_to_pickle(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bytes Python rq 3.0 wrote for `q.enqueue("jobs.ok", 2)` (pickle protocol 5, framed).
    const PY_PICKLE_DATA: &[u8] = b"\x80\x05\x95\x15\x00\x00\x00\x00\x00\x00\x00(\x8c\x07jobs.ok\x94NK\x02\x85\x94}\x94t\x94.";

    #[test]
    fn decodes_python_protocol5_job_tuple() {
        let data = compress(PY_PICKLE_DATA).expect("compress");
        let (ser, call) = decode_job_data(&data).expect("decodes");
        assert_eq!(ser, Serializer::Pickle);
        assert_eq!(call.function, "jobs.ok");
        assert_eq!(call.args, vec![json!(2)]);
        assert!(call.kwargs.is_empty());
    }

    #[test]
    fn decodes_python_json_job() {
        let raw = br#"["jobs.ok", null, [5], {"y": {"a": [1, 2]}}]"#;
        let (ser, call) = decode_job_data(&compress(raw).expect("compress")).expect("decodes");
        assert_eq!(ser, Serializer::Json);
        assert_eq!(call.kwargs["y"], json!({"a": [1, 2]}));
    }

    #[test]
    fn round_trips_both_serializers() {
        for ser in [Serializer::Pickle, Serializer::Json] {
            let call = JobCall {
                function: "mindora.echo".into(),
                args: vec![json!(1), json!("two"), json!([3.5, null])],
                kwargs: json!({"k": {"nested": true}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            };
            let data = encode_job_data(ser, &call).expect("encode");
            let (got_ser, got) = decode_job_data(&data).expect("decode");
            assert_eq!(got_ser, ser);
            assert_eq!(got, call);
            let v = json!({"a": [1, 2, {"b": "c"}]});
            assert_eq!(ser.loads(&ser.dumps(&v).expect("dumps")).expect("loads"), v);
        }
    }

    #[test]
    fn rejects_garbage_and_objects() {
        assert!(matches!(
            decode_job_data(b"garbage"),
            Err(CodecError::UnknownFormat(_))
        ));
        // A pickle that references a class (GLOBAL opcode): datetime.date(2020, 1, 1).
        let obj = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94C\x04\x07\xe4\x01\x01\x94\x85\x94R\x94.";
        let err = decode_job_data(&compress(obj).expect("compress")).expect_err("must fail");
        assert!(matches!(err, CodecError::Pickle(_)), "{err}");
        assert!(err.to_string().contains("undecodable pickle"));
    }
}
