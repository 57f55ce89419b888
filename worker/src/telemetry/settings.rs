//! Whether tracing is on, read from the standard OpenTelemetry variables only (the SDK and
//! exporter read the rest themselves: protocol, headers, timeout, sampler, resource).

/// What the environment says about tracing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Export spans.
    pub enabled: bool,
    /// `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set.
    pub service_name_set: bool,
}

impl Settings {
    /// From the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// On when an OTLP endpoint is set (or `OTEL_TRACES_EXPORTER=otlp` asks for the default
    /// one); off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, as the
    /// specification says.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = set("OTEL_TRACES_EXPORTER").map(|v| v.to_ascii_lowercase());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        let enabled = !disabled
            && match exporter.as_deref() {
                Some("none") => false,
                Some(list) => list.split(',').any(|e| e.trim() == "otlp"),
                None => endpoint,
            };
        let service_name_set = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        Settings {
            enabled,
            service_name_set,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Settings {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn off_unless_an_endpoint_or_the_otlp_exporter_is_named() {
        assert!(!with(&[]).enabled);
        assert!(!with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).enabled);
        assert!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).enabled);
        assert!(
            with(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])
            .enabled
        );
        assert!(with(&[("OTEL_TRACES_EXPORTER", "otlp")]).enabled);
    }

    #[test]
    fn the_specification_switches_win() {
        let e = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(!with(&[e, ("OTEL_SDK_DISABLED", "TRUE")]).enabled);
        assert!(!with(&[e, ("OTEL_TRACES_EXPORTER", "none")]).enabled);
        assert!(!with(&[e, ("OTEL_TRACES_EXPORTER", "console")]).enabled);
    }

    #[test]
    fn the_service_name_is_ours_unless_given() {
        assert!(!with(&[]).service_name_set);
        assert!(with(&[("OTEL_SERVICE_NAME", "w")]).service_name_set);
        assert!(with(&[("OTEL_RESOURCE_ATTRIBUTES", "a=1, service.name=w")]).service_name_set);
    }
}
