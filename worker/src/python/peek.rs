//! Reads the function name out of a job's `data` without decoding its arguments.
//!
//! A job whose arguments are pickled custom objects cannot be decoded in Rust (pickle is
//! never executed here), yet the worker must know the function name to route the job to the
//! Python pool. rq's payload is `pickle.dumps((func_name, instance, args, kwargs))`: the name
//! is the first string of the tuple, so reading the opcodes up to it is enough: `PROTO`,
//! an optional `FRAME`, an optional `MARK`, then one of the string opcodes.

use mindora_sdk::wire::job::field;
use mindora_sdk::wire::serializer::decompress_or_raw;
use mindora_sdk::wire::{JobCall, JobHash, Serializer};

use crate::handler::Registry;

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const MARK: u8 = b'(';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;

/// The serializer and function name of a job's `data` (rq's compressed call tuple), or None
/// when the payload does not start like one.
pub fn function_name(data: &[u8]) -> Option<(Serializer, String)> {
    let raw = decompress_or_raw(data);
    match Serializer::detect(&raw).ok()? {
        Serializer::Pickle => pickle_first_string(&raw).map(|n| (Serializer::Pickle, n)),
        Serializer::Json => {
            // JSON holds no objects to execute; a plain parse of the first element will do.
            let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
            let name = v.get(0)?.as_str()?.to_string();
            Some((Serializer::Json, name))
        }
    }
}

/// For a job whose arguments Rust cannot decode (pickled objects): the call to hand to the
/// registry's fallback (the Python pool, which decodes it), when the function is not built
/// in and a fallback is set. Arguments stay in `data` for Python; none are decoded here.
pub fn fallback_call(registry: &Registry, hash: &JobHash) -> Option<(Serializer, JobCall)> {
    let (serializer, function) = function_name(hash.raw(field::DATA)?)?;
    let built_in = registry.names().contains(&function.as_str());
    if built_in || registry.get(&function).is_none() {
        return None;
    }
    Some((
        serializer,
        JobCall {
            function,
            args: Vec::new(),
            kwargs: serde_json::Map::new(),
        },
    ))
}

fn pickle_first_string(b: &[u8]) -> Option<String> {
    let mut i = 0;
    if b.get(i) == Some(&PROTO) {
        i += 2;
    }
    if b.get(i) == Some(&FRAME) {
        i += 9;
    }
    if b.get(i) == Some(&MARK) {
        i += 1;
    }
    let (len, start) = match *b.get(i)? {
        SHORT_BINUNICODE => (usize::from(*b.get(i + 1)?), i + 2),
        BINUNICODE => (
            u32::from_le_bytes(b.get(i + 1..i + 5)?.try_into().ok()?) as usize,
            i + 5,
        ),
        BINUNICODE8 => (
            usize::try_from(u64::from_le_bytes(b.get(i + 1..i + 9)?.try_into().ok()?)).ok()?,
            i + 9,
        ),
        _ => return None,
    };
    let name = std::str::from_utf8(b.get(start..start.checked_add(len)?)?).ok()?;
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mindora_sdk::wire::serializer::compress;

    #[test]
    fn reads_names_from_pickle_protocols_and_json() {
        // pickle.dumps(("app.tasks.f", None, (pytasks.Point(1, 2),), {}), protocol=5): a custom
        // object serde-pickle cannot decode; its first bytes are all that is read.
        let p5 = b"\x80\x05\x95?\x00\x00\x00\x00\x00\x00\x00(\x8c\x0bapp.tasks.f\x94N\x8c\x07pytasks\x94\x8c\x05Point\x94\x93\x94)\x81\x94}\x94(\x8c\x01x\x94K\x01\x8c\x01y\x94K\x02ub\x85\x94}\x94t\x94.";
        let got = function_name(&compress(p5).expect("compresses"));
        assert_eq!(got, Some((Serializer::Pickle, "app.tasks.f".to_string())));
        // protocol 2: MARK before the tuple's items, BINUNICODE with a 4-byte length.
        let p2 = b"\x80\x02(X\x03\x00\x00\x00a.bq\x00N)}q\x01tq\x02.";
        assert_eq!(function_name(p2).map(|x| x.1).as_deref(), Some("a.b"));
        let json = br#"["app.tasks.g", null, [1], {}]"#;
        assert_eq!(
            function_name(&compress(json).expect("compresses")),
            Some((Serializer::Json, "app.tasks.g".to_string()))
        );
        assert_eq!(function_name(b"\x80\x05K\x01."), None);
    }
}
