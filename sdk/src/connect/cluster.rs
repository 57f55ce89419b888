//! Redis Cluster: `redis+cluster://[user:pass@]host:port[,host:port...]` (or
//! `rediss+cluster://` for TLS). Any reachable node seeds the redis crate's cluster client,
//! which learns the slot map, follows `MOVED` / `ASK` and picks up failovers.
//!
//! rq names its keys itself (inside Lua scripts too), so every key one job touches must live
//! in one slot: the key prefix must carry a hash tag (`RQ_KEY_PREFIX={rq}`), and a cluster
//! target with any other prefix is refused here, before anything connects.

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};

use super::settings::{parse_host_port, redact_url, split_list};
use super::ConnectError;
use crate::wire::keys;

/// Whether `url` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`).
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
}

/// The seed nodes and credentials of a cluster URL.
pub(crate) struct ClusterTarget {
    /// One connection info per seed node, credentials and TLS included.
    pub seeds: Vec<ConnectionInfo>,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    certs: Option<TlsCertificates>,
}

/// Refuses a key prefix without a Redis Cluster hash tag: rq's keys would spread over the
/// slots and no transition script could run.
pub fn check_prefix_for_cluster(prefix: &str) -> Result<(), ConnectError> {
    if keys::hash_tag(prefix).is_some() {
        return Ok(());
    }
    Err(ConnectError::Cluster(format!(
        "key prefix {prefix:?} has no hash tag: on a Redis Cluster every rq key must hash to one \
         slot; set RQ_KEY_PREFIX (or --rq-key-prefix) to a hash-tagged prefix such as \
         \"{{{prefix}}}\" in every worker and Python app"
    )))
}

impl ClusterTarget {
    /// Parses the URL; `username` / `password` override the URL's.
    pub(super) fn parse(
        url: &str,
        username: Option<String>,
        password: Option<String>,
        certs: Option<TlsCertificates>,
    ) -> Result<Self, ConnectError> {
        let bad = |why: &str| ConnectError::InvalidUrl {
            url: redact_url(url),
            reason: why.to_string(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+cluster://") {
            (true, r)
        } else {
            return Err(bad("not a redis+cluster:// or rediss+cluster:// URL"));
        };
        if certs.is_some() && !tls {
            return Err(ConnectError::Tls(
                "a CA file or client certificate needs rediss+cluster://".into(),
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !matches!(path.trim_matches('/'), "" | "0") {
            return Err(bad("a Redis Cluster has only database 0"));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad("credentials are not UTF-8"))
        };
        let (url_user, url_pass) = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (
                    Some(decode(user)?).filter(|s| !s.is_empty()),
                    Some(decode(pass)?).filter(|s| !s.is_empty()),
                )
            }
            None => (None, None),
        };
        let username = username.or(url_user);
        let password = password.or(url_pass);
        let mut seeds = Vec::new();
        for h in split_list(hosts) {
            let (host, port) = parse_host_port(&h, 6379).map_err(|e| bad(&e))?;
            let addr = if tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            };
            let info = addr.into_connection_info()?;
            let mut r = info.redis_settings().clone();
            if let Some(u) = &username {
                r = r.set_username(u);
            }
            if let Some(p) = &password {
                r = r.set_password(p);
            }
            seeds.push(info.set_redis_settings(r));
        }
        if seeds.is_empty() {
            return Err(bad("no cluster node address"));
        }
        check_prefix_for_cluster(keys::prefix())?;
        Ok(ClusterTarget {
            seeds,
            username,
            password,
            tls,
            certs,
        })
    }

    /// A cluster client with these timeouts and retries.
    pub(super) fn client(
        &self,
        options: &super::ManagerOptions,
    ) -> redis::RedisResult<ClusterClient> {
        let mut b = ClusterClientBuilder::new(self.seeds.clone())
            .connection_timeout(options.connection_timeout)
            .retries(options.retries.max(3) as u32)
            .max_retry_wait(options.max_delay.as_millis() as u64);
        if let Some(t) = options.response_timeout {
            b = b.response_timeout(t);
        }
        if let Some(u) = &self.username {
            b = b.username(u);
        }
        if let Some(p) = &self.password {
            b = b.password(p);
        }
        if self.tls {
            b = b.tls(TlsMode::Secure);
            if let Some(c) = &self.certs {
                b = b.certs(c.clone());
            }
        }
        b.build()
    }

    /// A plain client for one seed node (pub/sub: a cluster forwards every `PUBLISH` to all
    /// nodes, so any node hears rq's worker commands).
    pub(super) fn node_client(&self, i: usize) -> redis::RedisResult<redis::Client> {
        let info = self.seeds[i % self.seeds.len()].clone();
        match &self.certs {
            Some(c) if self.tls => redis::Client::build_with_tls(info, c.clone()),
            _ => redis::Client::open(info),
        }
    }
}

/// Refuses a plain `redis://` URL that reaches a Redis Cluster node: its keys would answer
/// `MOVED` for every slot the node does not hold. Says nothing when `INFO` is not allowed
/// (a narrow ACL user) or the target is a cluster URL already.
pub async fn check_not_a_cluster_node(
    connector: &super::RedisConnector,
    conn: &mut impl redis::aio::ConnectionLike,
) -> Result<(), ConnectError> {
    if connector.is_cluster() {
        return Ok(());
    }
    let info: redis::RedisResult<String> =
        redis::cmd("INFO").arg("cluster").query_async(conn).await;
    match info {
        Ok(text) if text.contains("cluster_enabled:1") => Err(ConnectError::Cluster(format!(
            "{} is a Redis Cluster node: use redis+cluster://host:port[,host:port...] (and a \
             hash-tagged RQ_KEY_PREFIX such as {{rq}})",
            connector.describe()
        ))),
        _ => Ok(()),
    }
}
