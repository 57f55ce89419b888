//! The schedule file: TOML (one `[[job]]` table per entry) or YAML (a `job:` list of the
//! same entries), told apart by the file's extension (`.yaml` / `.yml`, else TOML).
//!
//! ```toml
//! timezone = "Europe/Berlin"        # default for every entry (default: UTC)
//!
//! [[job]]
//! name = "nightly-report"           # unique in the file; names the tick keys (default: func)
//! cron = "0 30 2 * * *"             # 5 fields, or 6 with seconds first
//! queue = "default"
//! func = "reports.nightly"
//! args = [1, "two"]
//! kwargs = { full = true }
//! timeout = 600                     # job timeout, seconds (rq's job_timeout)
//! result_ttl = 3600
//! failure_ttl = 86400
//! ttl = 300                         # dropped unrun after this long in the queue
//! timezone = "UTC"                  # per-entry override
//! ```
//!
//! ```yaml
//! timezone: Europe/Berlin
//! job:
//!   - name: nightly-report
//!     cron: "0 30 2 * * *"
//!     func: reports.nightly
//!     args: [1, "two"]
//!     kwargs: {full: true}
//! ```

use std::collections::HashSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Year};
use croner::Cron;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a schedule file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid schedule file (TOML): {0}")]
    Toml(#[from] toml::de::Error),
    /// The file is not valid YAML of the expected shape.
    #[error("invalid schedule file (YAML): {0}")]
    Yaml(#[from] yaml_serde::Error),
    /// A cron expression does not parse.
    #[error("entry {entry}: invalid cron expression {expr:?}: {reason}")]
    Cron {
        /// Entry name.
        entry: String,
        /// The expression.
        expr: String,
        /// The parser's message.
        reason: String,
    },
    /// An unknown IANA time zone.
    #[error("entry {entry}: unknown time zone {tz:?}")]
    TimeZone {
        /// Entry name.
        entry: String,
        /// The zone given.
        tz: String,
    },
    /// Two entries share a name (their ticks would share claims).
    #[error("entry name {0:?} is used twice")]
    Duplicate(String),
    /// A field has a value that cannot work.
    #[error("entry {entry}: {reason}")]
    Invalid {
        /// Entry name.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    timezone: Option<String>,
    #[serde(default)]
    job: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<String>,
    cron: String,
    queue: Option<String>,
    func: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    timeout: Option<i64>,
    result_ttl: Option<i64>,
    failure_ttl: Option<i64>,
    ttl: Option<i64>,
    timezone: Option<String>,
}

/// One periodic job.
#[derive(Debug, Clone)]
pub struct CronEntry {
    /// Unique name; the tick claims and rq's cron job history are keyed by it.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    /// Parsed expression.
    pub cron: Cron,
    /// Zone the expression is evaluated in (DST-aware).
    pub tz: Tz,
    /// Target queue.
    pub queue: String,
    /// Dotted function name.
    pub func: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Job timeout in seconds.
    pub timeout: Option<i64>,
    /// How long a result is kept.
    pub result_ttl: Option<i64>,
    /// How long a failure is kept.
    pub failure_ttl: Option<i64>,
    /// How long the job may wait unrun.
    pub ttl: Option<i64>,
}

impl CronEntry {
    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|n| n.with_timezone(&Utc))
    }

    /// The expression in the field order Python's `croniter` (which rq's `CronJob` uses)
    /// reads: a seconds field goes last there, first here.
    pub fn croniter_expr(&self) -> String {
        let fields: Vec<&str> = self.expr.split_whitespace().collect();
        if fields.len() == 6 {
            let mut moved: Vec<&str> = fields[1..].to_vec();
            moved.push(fields[0]);
            moved.join(" ")
        } else {
            fields.join(" ")
        }
    }
}

/// The syntax of a schedule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// YAML.
    Yaml,
}

impl Format {
    /// By extension: `.yaml` / `.yml` (any case) is YAML, anything else TOML.
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Toml,
        }
    }
}

/// A parsed schedule file.
#[derive(Debug, Clone)]
pub struct CronFile {
    /// Where it was read from (shown in rq's registry as `config_file`).
    pub path: String,
    /// Its entries.
    pub entries: Vec<CronEntry>,
}

impl CronFile {
    /// Reads and validates a schedule file.
    pub fn load(path: &Path) -> Result<Self, ScheduleError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_as(&text, &path.display().to_string(), Format::of_path(path))
    }

    /// Parses TOML schedule text (`path` only labels it).
    pub fn parse(text: &str, path: &str) -> Result<Self, ScheduleError> {
        Self::parse_as(text, path, Format::Toml)
    }

    /// Parses schedule text in the given syntax (`path` only labels it).
    pub fn parse_as(text: &str, path: &str, format: Format) -> Result<Self, ScheduleError> {
        let raw: RawFile = match format {
            Format::Toml => toml::from_str(text)?,
            // An empty YAML document is an empty schedule, as an empty TOML file is.
            Format::Yaml if text.trim().is_empty() => RawFile {
                timezone: None,
                job: Vec::new(),
            },
            Format::Yaml => yaml_serde::from_str(text)?,
        };
        let parser = CronParser::builder().year(Year::Disallowed).build();
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(raw.job.len());
        for e in raw.job {
            let name = e.name.clone().unwrap_or_else(|| e.func.clone());
            if !seen.insert(name.clone()) {
                return Err(ScheduleError::Duplicate(name));
            }
            let invalid = |reason: &str| ScheduleError::Invalid {
                entry: name.clone(),
                reason: reason.to_string(),
            };
            if e.func.trim().is_empty() {
                return Err(invalid("func is empty"));
            }
            if name.contains(char::is_whitespace) {
                return Err(invalid("name must not contain whitespace"));
            }
            let fields = e.cron.split_whitespace().count();
            if !(fields == 5 || fields == 6 || e.cron.trim_start().starts_with('@')) {
                return Err(invalid("cron needs 5 fields, or 6 with seconds first"));
            }
            let cron = parser.parse(&e.cron).map_err(|err| ScheduleError::Cron {
                entry: name.clone(),
                expr: e.cron.clone(),
                reason: err.to_string(),
            })?;
            let tz_name = e
                .timezone
                .clone()
                .or_else(|| raw.timezone.clone())
                .unwrap_or_else(|| "UTC".into());
            let tz: Tz = tz_name.parse().map_err(|_| ScheduleError::TimeZone {
                entry: name.clone(),
                tz: tz_name.clone(),
            })?;
            entries.push(CronEntry {
                name,
                expr: e.cron,
                cron,
                tz,
                queue: e.queue.unwrap_or_else(|| "default".into()),
                func: e.func,
                args: e.args,
                kwargs: e.kwargs,
                timeout: e.timeout,
                result_ttl: e.result_ttl,
                failure_ttl: e.failure_ttl,
                ttl: e.ttl,
            });
        }
        Ok(CronFile {
            path: path.to_string(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_with_optional_seconds_and_zones() {
        let f = CronFile::parse(
            r#"
timezone = "Europe/Berlin"
[[job]]
name = "every-5s"
cron = "*/5 * * * * *"
func = "mindora.echo"
args = [1]
kwargs = { x = 2 }
[[job]]
cron = "30 2 * * *"
func = "mindora.noop"
queue = "low"
timezone = "UTC"
"#,
            "test.toml",
        )
        .expect("valid file");
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries[0].tz, chrono_tz::Europe::Berlin);
        assert_eq!(f.entries[1].name, "mindora.noop");
        assert_eq!(f.entries[0].croniter_expr(), "* * * * * */5");
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z")
            .expect("time")
            .with_timezone(&Utc);
        let n = f.entries[0].next_after(t).expect("next");
        assert_eq!(n.to_rfc3339(), "2026-01-01T00:00:05+00:00");
        let n = f.entries[1].next_after(t).expect("next");
        assert_eq!(n.to_rfc3339(), "2026-01-01T02:30:00+00:00");
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let bad = |t: &str| CronFile::parse(t, "x").expect_err("must fail").to_string();
        assert!(bad("[[job]]\ncron = \"nope\"\nfunc = \"f\"").contains("cron"));
        assert!(
            bad("[[job]]\ncron = \"* * * * *\"\nfunc = \"f\"\ntimezone = \"Mars/Base\"")
                .contains("time zone")
        );
        assert!(bad(
            "[[job]]\ncron = \"* * * * *\"\nfunc = \"f\"\n[[job]]\ncron = \"* * * * *\"\nfunc = \"f\""
        )
        .contains("twice"));
    }

    /// What an entry means, for comparing files (the parsed `Cron` has no `PartialEq`).
    fn meaning(f: &CronFile) -> Vec<String> {
        f.entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                    e.name,
                    e.expr,
                    e.tz,
                    e.queue,
                    e.func,
                    e.args,
                    e.kwargs,
                    e.timeout,
                    e.result_ttl,
                    e.failure_ttl,
                    e.ttl
                )
            })
            .collect()
    }

    #[test]
    fn yaml_and_toml_give_the_same_entries() {
        let toml = CronFile::parse_as(
            r#"
timezone = "Europe/Berlin"
[[job]]
name = "every-5s"
cron = "*/5 * * * * *"
func = "mindora.echo"
args = [1, "two", 2.5, true]
kwargs = { x = 2, nested = { y = [1, 2] } }
timeout = 600
result_ttl = 3600
failure_ttl = 86400
ttl = 300
[[job]]
cron = "30 2 * * *"
func = "mindora.noop"
queue = "low"
timezone = "UTC"
"#,
            "s.toml",
            Format::Toml,
        )
        .expect("valid TOML");
        let yaml = CronFile::parse_as(
            r#"
timezone: Europe/Berlin
job:
  - name: every-5s
    cron: "*/5 * * * * *"
    func: mindora.echo
    args: [1, "two", 2.5, true]
    kwargs:
      x: 2
      nested: {y: [1, 2]}
    timeout: 600
    result_ttl: 3600
    failure_ttl: 86400
    ttl: 300
  - cron: "30 2 * * *"
    func: mindora.noop
    queue: low
    timezone: UTC
"#,
            "s.yaml",
            Format::Yaml,
        )
        .expect("valid YAML");
        assert_eq!(meaning(&toml), meaning(&yaml));
        assert_eq!(yaml.entries.len(), 2);
        assert_eq!(Format::of_path(Path::new("/etc/m/cron.YML")), Format::Yaml);
        assert_eq!(Format::of_path(Path::new("cron.yaml")), Format::Yaml);
        assert_eq!(Format::of_path(Path::new("cron.toml")), Format::Toml);
        assert_eq!(Format::of_path(Path::new("cron")), Format::Toml);
    }

    #[test]
    fn bad_yaml_is_refused_with_the_reason() {
        let bad = |t: &str| {
            CronFile::parse_as(t, "x.yaml", Format::Yaml)
                .expect_err("must fail")
                .to_string()
        };
        // Unquoted `*` starts a YAML alias.
        let e = bad("job:\n  - cron: */5 * * * *\n    func: f\n");
        assert!(e.contains("YAML"), "{e}");
        let e = bad("job:\n  - cron: \"* * * * *\"\n    func: f\n    colour: red\n");
        assert!(e.contains("unknown field") && e.contains("colour"), "{e}");
        let e = bad("job:\n  - cron: \"* * * *\"\n    func: f\n");
        assert!(e.contains("5 fields"), "{e}");
        let e = bad("job: [unclosed\n");
        assert!(e.contains("YAML") && e.contains("line"), "{e}");
        assert!(CronFile::parse_as("", "e.yaml", Format::Yaml)
            .expect("empty is empty")
            .entries
            .is_empty());
    }
}
