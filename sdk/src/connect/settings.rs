//! Where Redis is and how to prove who we are: a URL plus optional TLS files, ACL
//! credentials and Sentinel nodes, from code, flags or `<PREFIX>_*` environment variables.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::ConnectError;

/// PEM files for TLS (`rediss://`, `amqps://`): the CA that signed the server's certificate
/// (default: the system's roots) and an optional client certificate and key (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for servers that ask for one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// `<prefix>_CA_FILE`, `<prefix>_CLIENT_CERT`, `<prefix>_CLIENT_KEY` (e.g. prefix
    /// `MINDORA_AMQP`, the variables the worker's `--amqp-ca-file` ... read too).
    pub fn from_env(prefix: &str) -> Self {
        let var = |name: &str| {
            std::env::var(format!("{prefix}_{name}"))
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TlsFiles {
            ca_file: var("CA_FILE"),
            client_cert: var("CLIENT_CERT"),
            client_key: var("CLIENT_KEY"),
        }
    }
}

/// Sentinel nodes to ask for the current master, as flags rather than a
/// `redis+sentinel://` URL.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SentinelSettings {
    /// `host:port` of each Sentinel (any one answering is enough).
    pub addrs: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> ...`).
    pub master_name: Option<String>,
    /// ACL user on the Sentinels, when they require one.
    pub username: Option<String>,
    /// Password on the Sentinels (`requirepass` / ACL).
    pub password: Option<String>,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("addrs", &self.addrs)
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Everything needed to reach one Redis deployment.
///
/// `url` is `redis://`, `rediss://` (TLS), `redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db]`
/// or `rediss+sentinel://...` (TLS to the Sentinels and the master). Username and password
/// given here override those in the URL, so secrets can stay out of it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisSettings {
    /// The URL (see above).
    pub url: String,
    /// ACL user for the data nodes (overrides the URL's).
    pub username: Option<String>,
    /// Password for the data nodes (overrides the URL's).
    pub password: Option<String>,
    /// File holding the password (a mounted secret); read when connecting.
    pub password_file: Option<PathBuf>,
    /// TLS files.
    pub tls: TlsFiles,
    /// Sentinel nodes given as settings (a `redis+sentinel://` URL needs none).
    pub sentinel: SentinelSettings,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

impl RedisSettings {
    /// Settings from a URL alone.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Fills every unset field from `<prefix>_URL`, `_USERNAME`, `_PASSWORD`,
    /// `_PASSWORD_FILE`, `_CA_FILE`, `_CLIENT_CERT`, `_CLIENT_KEY`, `_SENTINELS`
    /// (comma-separated), `_SENTINEL_MASTER`, `_SENTINEL_USERNAME`, `_SENTINEL_PASSWORD`;
    /// e.g. prefix `MINDORA_NOTIFY_REDIS` for the pipelines' notification Redis.
    pub fn with_env(mut self, prefix: &str) -> Self {
        let var = |name: &str| {
            std::env::var(format!("{prefix}_{name}"))
                .ok()
                .filter(|v| !v.is_empty())
        };
        fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
            if slot.is_none() {
                *slot = value;
            }
        }
        if self.url.is_empty() {
            self.url = var("URL").unwrap_or_default();
        }
        fill(&mut self.username, var("USERNAME"));
        fill(&mut self.password, var("PASSWORD"));
        fill(
            &mut self.password_file,
            var("PASSWORD_FILE").map(PathBuf::from),
        );
        fill(&mut self.tls.ca_file, var("CA_FILE").map(PathBuf::from));
        fill(
            &mut self.tls.client_cert,
            var("CLIENT_CERT").map(PathBuf::from),
        );
        fill(
            &mut self.tls.client_key,
            var("CLIENT_KEY").map(PathBuf::from),
        );
        if self.sentinel.addrs.is_empty() {
            self.sentinel.addrs = var("SENTINELS").map(|v| split_list(&v)).unwrap_or_default();
        }
        fill(&mut self.sentinel.master_name, var("SENTINEL_MASTER"));
        fill(&mut self.sentinel.username, var("SENTINEL_USERNAME"));
        fill(&mut self.sentinel.password, var("SENTINEL_PASSWORD"));
        self
    }
}

/// Splits `a, b,c` into non-empty trimmed items.
pub(crate) fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}://{user}:***{}", &url[..s], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// TLS to the Sentinels and the master (`rediss+sentinel://`).
    pub tls: bool,
    /// Credentials for the master, from the URL.
    pub username: Option<String>,
    /// Password for the master, from the URL.
    pub password: Option<String>,
    /// Sentinel nodes.
    pub nodes: Vec<(String, u16)>,
    /// Master name.
    pub master: String,
    /// Database number.
    pub db: i64,
}

/// Parses `redis+sentinel://[user:pass@]host[:port][,host[:port]...]/master[/db]`
/// (Sentinel's default port is 26379).
pub(crate) fn parse_sentinel_url(url: &str) -> Result<SentinelUrl, ConnectError> {
    let bad = |why: &str| ConnectError::InvalidUrl {
        url: redact_url(url),
        reason: why.to_string(),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else {
        return Err(bad("not a redis+sentinel:// or rediss+sentinel:// URL"));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad("credentials are not UTF-8"))
    };
    let (username, password) = match userinfo {
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let user = decode(user)?;
            let pass = decode(pass)?;
            (
                Some(user).filter(|s| !s.is_empty()),
                Some(pass).filter(|s| !s.is_empty()),
            )
        }
        None => (None, None),
    };
    let nodes = split_list(hosts)
        .iter()
        .map(|h| parse_host_port(h, 26379).map_err(|e| bad(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(bad("no Sentinel address"));
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let master = segments
        .next()
        .ok_or_else(|| bad("no master name (redis+sentinel://host:26379/<master>)"))?
        .to_string();
    let db = match segments.next() {
        Some(d) => d.parse().map_err(|_| bad("database is not a number"))?,
        None => 0,
    };
    Ok(SentinelUrl {
        tls,
        username,
        password,
        nodes,
        master,
        db,
    })
}

/// `host:port`, `[v6]:port` or `host` (then `default_port`).
pub(crate) fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad address {s:?}"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in {s:?}"))?,
            None => default_port,
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse().map_err(|_| format!("bad port in {s:?}"))?,
        )),
        None => Ok((s.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sentinel_urls() {
        let u = parse_sentinel_url("redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:1/main/3")
            .expect("valid");
        assert!(!u.tls);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(
            u.nodes,
            vec![
                ("s1".into(), 26380),
                ("s2".into(), 26379),
                ("::1".into(), 1)
            ]
        );
        assert_eq!((u.master.as_str(), u.db), ("main", 3));
        let t = parse_sentinel_url("rediss+sentinel://h/m").expect("valid");
        assert!(t.tls && t.username.is_none() && t.db == 0);
        assert!(parse_sentinel_url("redis+sentinel://h").is_err());
        assert!(parse_sentinel_url("redis+sentinel:///m").is_err());
        assert!(parse_sentinel_url("redis+sentinel://h:x/m").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("rediss://u:secret@h:6380/0"),
            "rediss://u:***@h:6380/0"
        );
        assert_eq!(redact_url("redis://h/0"), "redis://h/0");
        let s = RedisSettings {
            password: Some("secret".into()),
            ..RedisSettings::from_url("redis://:secret@h")
        };
        assert!(!format!("{s:?}").contains("secret"));
    }
}
