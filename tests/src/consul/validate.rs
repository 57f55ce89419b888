//! Request validation against Consul's documented agent API (`/v1/agent/service/register`).
//!
//! Stricter than Consul on one point, on purpose: Consul's JSON decoding silently ignores a
//! field it does not know (a misspelt `DeregisterCriticalServiceAfter` would just be lost),
//! so here an unknown field is a 400 and a recorded violation. Types, required fields and
//! value rules follow Consul's own checks (`Missing service name`, `Invalid service address`,
//! `Invalid Service Meta`, `Invalid check`).

use serde_json::{Map, Value};

/// Fields of a service definition, as the agent API documents them.
const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Meta",
    "Port",
    "Kind",
    "Proxy",
    "Connect",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
    "Namespace",
    "Partition",
    "Locality",
];

/// Fields of a check definition inside a service registration.
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "Name",
    "Notes",
    "Status",
    "Args",
    "DockerContainerID",
    "Shell",
    "HTTP",
    "H2PING",
    "H2PingUseTLS",
    "Method",
    "Body",
    "DisableRedirects",
    "Header",
    "TCP",
    "TCPUseTLS",
    "UDP",
    "GRPC",
    "GRPCUseTLS",
    "OSService",
    "TLSServerName",
    "TLSSkipVerify",
    "Interval",
    "Timeout",
    "TTL",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "OutputMaxSize",
    "AliasNode",
    "AliasService",
];

/// Check kinds: exactly one must be set.
const CHECK_KINDS: &[&str] = &[
    "Args",
    "HTTP",
    "H2PING",
    "TCP",
    "UDP",
    "GRPC",
    "OSService",
    "TTL",
    "AliasService",
];

/// Parses a Go duration (`10s`, `1m30s`, `500ms`, `1h`) into milliseconds.
pub fn go_duration_ms(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 6e4,
            "h" => 3.6e6,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * factor;
    }
    Some(total as u64)
}

fn string_field<'a>(
    o: &'a Map<String, Value>,
    f: &str,
    ctx: &str,
) -> Result<Option<&'a str>, String> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!(
            "Request decode failed: {ctx}{f}: expected a string, got {v}"
        )),
    }
}

fn duration_field(o: &Map<String, Value>, f: &str, ctx: &str) -> Result<Option<u64>, String> {
    match string_field(o, f, ctx)? {
        None => Ok(None),
        Some(s) => go_duration_ms(s).map(Some).ok_or_else(|| {
            format!("Request decode failed: {ctx}{f}: time: invalid duration {s:?}")
        }),
    }
}

fn unknown(o: &Map<String, Value>, allowed: &[&str], ctx: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "Request decode failed: unknown field {ctx}{k:?} (not in Consul's API)"
        )),
        None => Ok(()),
    }
}

/// Validates a registration body; `Err` is the 400 reason Consul would give.
pub fn service_registration(body: &[u8]) -> Result<Value, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Request decode failed: {e}"))?;
    let o = v
        .as_object()
        .ok_or("Request decode failed: body is not a JSON object")?;
    unknown(o, SERVICE_FIELDS, "")?;
    let name = string_field(o, "Name", "")?.unwrap_or("");
    if name.is_empty() {
        return Err("Missing service name".into());
    }
    string_field(o, "ID", "")?;
    string_field(o, "Kind", "")?;
    if let Some(a) = string_field(o, "Address", "")? {
        if matches!(a, "0.0.0.0" | "::" | "[::]") {
            return Err("Invalid service address".into());
        }
    }
    if let Some(p) = o.get("Port") {
        if p.as_u64().is_none_or(|p| p > 65535) {
            return Err(format!(
                "Request decode failed: Port: expected an integer port, got {p}"
            ));
        }
    }
    if let Some(t) = o.get("Tags") {
        let ok = t.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(format!(
                "Request decode failed: Tags: expected []string, got {t}"
            ));
        }
    }
    if let Some(b) = o.get("EnableTagOverride") {
        if !b.is_boolean() {
            return Err(format!(
                "Request decode failed: EnableTagOverride: expected a bool, got {b}"
            ));
        }
    }
    if let Some(m) = o.get("Meta") {
        meta(m)?;
    }
    let mut checks: Vec<&Value> = o.get("Check").into_iter().collect();
    match o.get("Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => checks.extend(a),
        Some(c) => {
            return Err(format!(
                "Request decode failed: Checks: expected an array, got {c}"
            ))
        }
    }
    for c in checks {
        check(c)?;
    }
    Ok(v)
}

fn meta(m: &Value) -> Result<(), String> {
    let m = m.as_object().ok_or_else(|| {
        format!("Request decode failed: Meta: expected map[string]string, got {m}")
    })?;
    if m.len() > 64 {
        return Err(
            "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
                .into(),
        );
    }
    for (k, v) in m {
        let Some(v) = v.as_str() else {
            return Err(format!(
                "Request decode failed: Meta.{k}: expected a string, got {v}"
            ));
        };
        if k.is_empty()
            || k.len() > 128
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "Invalid Service Meta: Key contains invalid characters: {k:?}"
            ));
        }
        if k.starts_with("consul-") {
            return Err(format!(
                "Invalid Service Meta: Key prefix 'consul-' is reserved: {k:?}"
            ));
        }
        if v.len() > 512 {
            return Err(format!(
                "Invalid Service Meta: Value is too long (limit: 512 characters): {k:?}"
            ));
        }
    }
    Ok(())
}

fn check(c: &Value) -> Result<(), String> {
    let o = c
        .as_object()
        .ok_or_else(|| format!("Request decode failed: Check: expected an object, got {c}"))?;
    unknown(o, CHECK_FIELDS, "Check.")?;
    for f in [
        "CheckID", "Name", "Notes", "Status", "HTTP", "Method", "TCP", "UDP", "GRPC", "Body",
    ] {
        string_field(o, f, "Check.")?;
    }
    let kinds: Vec<&str> = CHECK_KINDS
        .iter()
        .copied()
        .filter(|k| o.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if kinds.len() != 1 {
        return Err(format!(
            "Invalid check: exactly one of {CHECK_KINDS:?} must be set, found {kinds:?}"
        ));
    }
    let interval = duration_field(o, "Interval", "Check.")?;
    duration_field(o, "Timeout", "Check.")?;
    duration_field(o, "DeregisterCriticalServiceAfter", "Check.")?;
    let ttl = duration_field(o, "TTL", "Check.")?;
    match kinds[0] {
        "TTL" => {
            if ttl.unwrap_or(0) == 0 {
                return Err("Invalid check: TTL must be > 0 for TTL checks".into());
            }
        }
        "AliasService" => {}
        _ => {
            if interval.unwrap_or(0) == 0 {
                return Err(
                    "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or Docker checks"
                        .into(),
                );
            }
        }
    }
    if let Some(url) = string_field(o, "HTTP", "Check.")? {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "Invalid check: HTTP must be an http(s) URL, got {url:?}"
            ));
        }
    }
    if let Some(s) = string_field(o, "Status", "Check.")? {
        if !matches!(s, "passing" | "warning" | "critical") {
            return Err("Status for checks must 'passing', 'warning', 'critical'".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration_ms("10s"), Some(10_000));
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("250ms"), Some(250));
        assert_eq!(go_duration_ms("10"), None);
        assert_eq!(go_duration_ms("ten"), None);
    }

    #[test]
    fn registrations() {
        let ok = br#"{"ID":"a","Name":"n","Tags":["x"],"Meta":{"k":"v"},"Port":1,
            "Check":{"HTTP":"http://h:1/healthz","Interval":"10s","DeregisterCriticalServiceAfter":"1m"}}"#;
        assert!(service_registration(ok).is_ok());
        for bad in [
            &br#"{"Name":""}"#[..],
            br#"{"Name":"n","Tgas":[]}"#,
            br#"{"Name":"n","Port":"1"}"#,
            br#"{"Name":"n","Meta":{"consul-x":"v"}}"#,
            br#"{"Name":"n","Check":{"HTTP":"http://h/","Interval":"10"}}"#,
            br#"{"Name":"n","Check":{"HTTP":"http://h/"}}"#,
            br#"{"Name":"n","Check":{"HTTP":"http://h/","TTL":"10s","Interval":"1s"}}"#,
        ] {
            assert!(
                service_registration(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
