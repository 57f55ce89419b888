//! Connection building for every Redis and RabbitMQ user in mindora (the worker, this SDK's
//! [`crate::Client`], the pipelines' notifications), in one place:
//!
//! - `redis://` and `rediss://` (TLS, server verified against a CA file or the system roots,
//!   optional client certificate), ACL `user:password` in the URL or from settings / a file;
//! - Redis Sentinel (`redis+sentinel://h1:26379,h2:26379/<master>[/db]` or flags): the
//!   master is looked up through the Sentinels, and [`RedisConn`] follows it when it moves;
//! - Redis Cluster (`redis+cluster://h1:6379,h2:6379`): the redis crate's cluster client,
//!   allowed only with a hash-tagged key prefix ([`cluster`]);
//! - `amqp://` / `amqps://` with CA and client certificates, several brokers tried in turn
//!   ([`amqp`]).

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod cluster;
mod conn;
pub mod failover;
pub mod settings;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManagerConfig, MultiplexedConnection, PubSub};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisResult, TlsMode};

pub use conn::RedisConn;
pub use settings::{redact_url, RedisSettings, SentinelSettings, TlsFiles};

/// Settings that cannot work, found before any connection is tried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse (Redis or AMQP: the caller names the setting).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate, key or password file cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS settings that contradict each other or unusable PEM data.
    #[error("TLS: {0}")]
    Tls(String),
    /// Settings a Redis Cluster cannot serve (e.g. a key prefix without a hash tag).
    #[error("Redis Cluster: {0}")]
    Cluster(String),
    /// The key prefix is not one rq 3.0 accepts, or differs from the one already in use.
    #[error(transparent)]
    KeyPrefix(#[from] crate::wire::keys::PrefixError),
    /// The redis crate rejected the settings.
    #[error("redis settings: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Whether retrying may help: the server is down, unreachable or slow. A TLS rejection
/// (certificate not signed by our CA, client certificate refused) or refused credentials
/// are settings to fix, so a program should stop with the error instead of retrying.
pub fn is_transient(e: &redis::RedisError) -> bool {
    if tls::is_tls_rejection(e) || e.kind() == redis::ErrorKind::AuthenticationFailed {
        return false;
    }
    if matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM")) {
        return false;
    }
    e.is_connection_refusal() || e.is_timeout() || e.is_io_error() || e.is_connection_dropped()
}

/// Tuning of the reconnecting connections [`RedisConnector::manager`] returns.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Longest wait for a reply; must exceed any blocking command sent on the connection.
    pub response_timeout: Option<Duration>,
    /// Longest wait to connect (TCP and TLS handshake).
    pub connection_timeout: Duration,
    /// Reconnect attempts per failed command before the error is returned.
    pub retries: usize,
    /// Longest pause between reconnect attempts.
    pub max_delay: Duration,
    /// With Sentinel: how often to ask the Sentinels whether the master moved.
    pub follow_every: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            response_timeout: Some(Duration::from_secs(10)),
            connection_timeout: Duration::from_secs(3),
            retries: 2,
            max_delay: Duration::from_secs(2),
            follow_every: Duration::from_secs(1),
        }
    }
}

impl ManagerOptions {
    fn config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(self.response_timeout)
            .set_connection_timeout(Some(self.connection_timeout))
            .set_number_of_retries(self.retries)
            .set_max_delay(self.max_delay)
    }
}

// One per connector, behind an Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Direct(redis::Client),
    Sentinel(SentinelTarget),
    Cluster(cluster::ClusterTarget),
}

struct SentinelTarget {
    /// Full lookups: asks the Sentinels, then checks the master's role.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The master's name.
    master: String,
    /// A kept connection to one Sentinel for the cheap "where is the master" poll.
    probe: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// One client per Sentinel, for their failover events.
    sentinels: Vec<redis::Client>,
    /// The failover events, listened to from the first connection that asks.
    events: std::sync::OnceLock<tokio::sync::watch::Receiver<failover::Phase>>,
}

/// Opens connections to one Redis deployment (direct or through Sentinel); cheap to clone.
#[derive(Clone)]
pub struct RedisConnector {
    target: Arc<Target>,
    describe: String,
}

impl std::fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl RedisConnector {
    /// Checks the settings and reads the files they name; connects nothing yet.
    /// Fixes the key prefix from `RQ_KEY_PREFIX` unless one was set already.
    pub fn new(settings: &RedisSettings) -> Result<Self, ConnectError> {
        crate::wire::keys::prefix_from_env()?;
        tls::install_crypto_provider();
        let password = match (&settings.password, &settings.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => {
                let raw = tls::read(file)?;
                Some(String::from_utf8_lossy(&raw).trim_end().to_string())
            }
            (None, None) => None,
        };
        let certs = tls::redis_certificates(&settings.tls)?;
        let url = settings.url.as_str();
        let sentinel_url =
            url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://");
        let target = if cluster::is_cluster_url(url) {
            if !settings.sentinel.addrs.is_empty() {
                return Err(ConnectError::Cluster(
                    "Sentinel addresses given with a cluster URL".into(),
                ));
            }
            Target::Cluster(cluster::ClusterTarget::parse(
                url,
                settings.username.clone(),
                password,
                certs,
            )?)
        } else if sentinel_url || !settings.sentinel.addrs.is_empty() {
            let mut parsed = if sentinel_url {
                settings::parse_sentinel_url(url)?
            } else {
                from_sentinel_flags(settings)?
            };
            if settings.username.is_some() {
                parsed.username = settings.username.clone();
            }
            if password.is_some() {
                parsed.password = password;
            }
            let master = parsed.master.clone();
            let sentinels = sentinel_nodes(&parsed, &settings.sentinel, certs.as_ref())?;
            Target::Sentinel(SentinelTarget {
                client: tokio::sync::Mutex::new(sentinel_client(
                    parsed,
                    &settings.sentinel,
                    certs,
                )?),
                master,
                probe: tokio::sync::Mutex::new(None),
                sentinels,
                events: std::sync::OnceLock::new(),
            })
        } else {
            let info = url
                .into_connection_info()
                .map_err(|e| ConnectError::InvalidUrl {
                    url: redact_url(url),
                    reason: e.to_string(),
                })?;
            let mut redis_info = info.redis_settings().clone();
            if let Some(user) = &settings.username {
                redis_info = redis_info.set_username(user);
            }
            if let Some(pass) = &password {
                redis_info = redis_info.set_password(pass);
            }
            let is_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
            let info = info.set_redis_settings(redis_info);
            let client = match certs {
                Some(c) if is_tls => redis::Client::build_with_tls(info, c)?,
                Some(_) => {
                    return Err(ConnectError::Tls(
                        "a CA file or client certificate needs a rediss:// URL".into(),
                    ))
                }
                None => redis::Client::open(info)?,
            };
            Target::Direct(client)
        };
        Ok(RedisConnector {
            target: Arc::new(target),
            describe: redact_url(url),
        })
    }

    /// Shorthand for [`RedisConnector::new`] with a URL alone.
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        Self::new(&RedisSettings::from_url(url))
    }

    /// The URL, password redacted (for logs).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether the master is found through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        matches!(*self.target, Target::Sentinel(_))
    }

    /// Whether the target is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(*self.target, Target::Cluster(_))
    }

    pub(crate) fn cluster_target(&self) -> Option<&cluster::ClusterTarget> {
        match &*self.target {
            Target::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// A client for the current master (asks the Sentinels each time under Sentinel; the
    /// first seed node of a cluster).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match &*self.target {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.client.lock().await.async_get_client().await,
            Target::Cluster(c) => c.node_client(0),
        }
    }

    /// Under Sentinel, where the Sentinels say the master is now (`host:port`), asked on a
    /// kept connection (one command, no new connection per call); `None` for a direct
    /// target.
    pub async fn master_address(&self) -> RedisResult<Option<String>> {
        let Target::Sentinel(s) = &*self.target else {
            return Ok(None);
        };
        let mut probe = s.probe.lock().await;
        if probe.is_none() {
            let sentinel = s.client.lock().await.async_get_sentinel_client().await?;
            *probe = Some(sentinel.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = probe.as_mut() else {
            return Ok(None);
        };
        let answer: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&s.master)
            .query_async(conn)
            .await;
        match answer {
            Ok(addr) => Ok(addr.map(|(host, port)| format!("{host}:{port}"))),
            Err(e) => {
                // Ask another Sentinel next time.
                *probe = None;
                Err(e)
            }
        }
    }

    /// Under Sentinel, the failover events of the master (listening starts on the first
    /// call, which must be inside a tokio runtime); `None` for a direct target.
    pub fn failover_events(&self) -> Option<tokio::sync::watch::Receiver<failover::Phase>> {
        let Target::Sentinel(s) = &*self.target else {
            return None;
        };
        Some(
            s.events
                .get_or_init(|| failover::spawn(s.sentinels.clone(), s.master.clone()))
                .clone(),
        )
    }

    /// A reconnecting connection; under Sentinel it follows the master when it moves.
    pub async fn manager(&self, options: &ManagerOptions) -> RedisResult<RedisConn> {
        RedisConn::open(self, options).await
    }

    /// A plain multiplexed connection to the current master (no reconnection).
    pub async fn multiplexed(&self) -> RedisResult<MultiplexedConnection> {
        self.client()
            .await?
            .get_multiplexed_async_connection()
            .await
    }

    /// A pub/sub connection to the current master; resubscribe through this after an error
    /// (a failover closes it).
    pub async fn pubsub(&self) -> RedisResult<PubSub> {
        if let Target::Cluster(c) = &*self.target {
            // Any node hears every PUBLISH: take the first seed that answers.
            let mut last = None;
            for i in 0..c.seeds.len() {
                match c.node_client(i)?.get_async_pubsub().await {
                    Ok(p) => return Ok(p),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        self.client().await?.get_async_pubsub().await
    }
}

/// A Sentinel target from `--redis-sentinels` / `--redis-sentinel-master` and the URL's
/// scheme, credentials and database.
fn from_sentinel_flags(settings: &RedisSettings) -> Result<settings::SentinelUrl, ConnectError> {
    let bad = |reason: String| ConnectError::InvalidUrl {
        url: redact_url(&settings.url),
        reason,
    };
    let master = settings
        .sentinel
        .master_name
        .clone()
        .ok_or_else(|| bad("Sentinel addresses given without the master's name".into()))?;
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| bad(e.to_string()))?;
    let nodes = settings
        .sentinel
        .addrs
        .iter()
        .map(|a| settings::parse_host_port(a, 26379).map_err(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let r = info.redis_settings();
    Ok(settings::SentinelUrl {
        tls: matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
        username: r.username().map(str::to_string),
        password: r.password().map(str::to_string),
        nodes,
        master,
        db: r.db(),
    })
}

/// A client per Sentinel (TLS and the Sentinels' own credentials as configured).
fn sentinel_nodes(
    target: &settings::SentinelUrl,
    sentinel: &SentinelSettings,
    certs: Option<&redis::TlsCertificates>,
) -> Result<Vec<redis::Client>, ConnectError> {
    let mut out = Vec::with_capacity(target.nodes.len());
    for (host, port) in &target.nodes {
        let addr = if target.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        };
        let info = addr.into_connection_info()?;
        let mut r = info.redis_settings().clone();
        if let Some(u) = &sentinel.username {
            r = r.set_username(u);
        }
        if let Some(p) = &sentinel.password {
            r = r.set_password(p);
        }
        let info = info.set_redis_settings(r);
        out.push(match certs {
            Some(c) if target.tls => redis::Client::build_with_tls(info, c.clone())?,
            _ => redis::Client::open(info)?,
        });
    }
    Ok(out)
}

fn sentinel_client(
    target: settings::SentinelUrl,
    sentinel: &SentinelSettings,
    certs: Option<redis::TlsCertificates>,
) -> Result<SentinelClient, ConnectError> {
    let nodes = target.nodes.iter().map(|(host, port)| {
        if target.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut b = SentinelClientBuilder::new(nodes, &target.master, SentinelServerType::Master)?
        .set_client_to_redis_db(target.db);
    if target.tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(c) = certs {
            b = b
                .set_client_to_redis_certificates(c.clone())
                .set_client_to_sentinel_certificates(c);
        }
    } else if certs.is_some() {
        return Err(ConnectError::Tls(
            "a CA file or client certificate needs rediss+sentinel:// (or rediss:// with --redis-sentinels)".into(),
        ));
    }
    if let Some(u) = &target.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &target.password {
        b = b.set_client_to_redis_password(p);
    }
    if let Some(u) = &sentinel.username {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = &sentinel.password {
        b = b.set_client_to_sentinel_password(p);
    }
    Ok(b.build()?)
}
