//! Flags for reaching managed or replicated Redis and RabbitMQ (TLS, ACL users, Sentinel,
//! several brokers). They only gather settings: connections are built by
//! [`mindora_sdk::connect`], the one place the worker, the SDK and the pipelines share.

use std::path::PathBuf;

use clap::Args;
use mindora_sdk::connect::amqp::AmqpConnector;
use mindora_sdk::connect::{
    ConnectError, RedisConnector, RedisSettings, SentinelSettings, TlsFiles,
};

/// TLS, ACL and Sentinel settings of the queue Redis (`--redis-url` names it).
#[derive(Debug, Clone, Default, Args)]
pub struct RedisConnectArgs {
    /// CA certificate (PEM) that signed the Redis server's certificate (`rediss://`);
    /// default: the system's roots.
    #[arg(
        id = "redis_ca_file",
        long = "redis-ca-file",
        env = "MINDORA_REDIS_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for Redis servers that require mutual TLS.
    #[arg(
        id = "redis_client_cert",
        long = "redis-client-cert",
        env = "MINDORA_REDIS_CLIENT_CERT",
        requires = "redis_client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        id = "redis_client_key",
        long = "redis-client-key",
        env = "MINDORA_REDIS_CLIENT_KEY",
        requires = "redis_client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// ACL user (overrides the URL's).
    #[arg(
        id = "redis_username",
        long = "redis-username",
        env = "MINDORA_REDIS_USERNAME"
    )]
    pub username: Option<String>,
    /// Password (overrides the URL's; prefer the environment or a file to the command line).
    #[arg(
        id = "redis_password",
        long = "redis-password",
        env = "MINDORA_REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// File holding the password (e.g. a mounted Kubernetes Secret).
    #[arg(
        id = "redis_password_file",
        long = "redis-password-file",
        env = "MINDORA_REDIS_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Sentinel addresses `host:port,...`: the master is looked up through them and
    /// followed on failover (or use a `redis+sentinel://` URL).
    #[arg(
        id = "redis_sentinels",
        long = "redis-sentinels",
        env = "MINDORA_REDIS_SENTINELS",
        value_delimiter = ','
    )]
    pub sentinels: Vec<String>,
    /// The master's name as the Sentinels monitor it.
    #[arg(
        id = "redis_sentinel_master",
        long = "redis-sentinel-master",
        env = "MINDORA_REDIS_SENTINEL_MASTER"
    )]
    pub sentinel_master: Option<String>,
    /// ACL user on the Sentinels.
    #[arg(
        id = "redis_sentinel_username",
        long = "redis-sentinel-username",
        env = "MINDORA_REDIS_SENTINEL_USERNAME"
    )]
    pub sentinel_username: Option<String>,
    /// Password on the Sentinels.
    #[arg(
        id = "redis_sentinel_password",
        long = "redis-sentinel-password",
        env = "MINDORA_REDIS_SENTINEL_PASSWORD",
        hide_env_values = true
    )]
    pub sentinel_password: Option<String>,
    /// rq 3.0's key prefix (`RQ_KEY_PREFIX`, default `rq`): every rq key and channel starts
    /// with `<prefix>:`, mindora's own with `<prefix>:mindora:` (`mindora:` under `rq`). Use
    /// the same value as the Python apps; on a Redis Cluster it needs a hash tag (`{rq}`).
    #[arg(id = "rq_key_prefix", long = "rq-key-prefix", env = "RQ_KEY_PREFIX")]
    pub key_prefix: Option<String>,
}

impl RedisConnectArgs {
    /// The SDK settings for `url` with these flags.
    pub fn settings(&self, url: &str) -> RedisSettings {
        RedisSettings {
            url: url.to_string(),
            username: self.username.clone(),
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            tls: TlsFiles {
                ca_file: self.ca_file.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
            },
            sentinel: SentinelSettings {
                addrs: self.sentinels.clone(),
                master_name: self.sentinel_master.clone(),
                username: self.sentinel_username.clone(),
                password: self.sentinel_password.clone(),
            },
        }
    }

    /// The connector for `url` with these flags (checks them and reads the files). Fixes
    /// this process's key prefix first (see [`mindora_sdk::wire::keys::set_prefix`]).
    pub fn connector(&self, url: &str) -> Result<RedisConnector, ConnectError> {
        self.apply_key_prefix()?;
        RedisConnector::new(&self.settings(url))
    }

    /// Fixes this process's key prefix: `--rq-key-prefix`, else `RQ_KEY_PREFIX`, else `rq`.
    pub fn apply_key_prefix(&self) -> Result<(), mindora_sdk::wire::keys::PrefixError> {
        match &self.key_prefix {
            Some(p) => mindora_sdk::wire::keys::set_prefix(p),
            None => mindora_sdk::wire::keys::prefix_from_env().map(|_| ()),
        }
    }
}

/// TLS files for `amqps://` brokers (`--amqp-url` may list several brokers, comma-separated).
#[derive(Debug, Clone, Default, Args)]
pub struct AmqpTlsArgs {
    /// CA certificate (PEM) that signed the broker's certificate (added to the system roots).
    #[arg(
        id = "amqp_ca_file",
        long = "amqp-ca-file",
        env = "MINDORA_AMQP_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require mutual TLS.
    #[arg(
        id = "amqp_client_cert",
        long = "amqp-client-cert",
        env = "MINDORA_AMQP_CLIENT_CERT",
        requires = "amqp_client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, PKCS#8).
    #[arg(
        id = "amqp_client_key",
        long = "amqp-client-key",
        env = "MINDORA_AMQP_CLIENT_KEY"
    )]
    pub client_key: Option<PathBuf>,
}

impl AmqpTlsArgs {
    /// The connector for `urls` (one URL or several, comma-separated) with these files.
    pub fn connector(&self, urls: &str) -> Result<AmqpConnector, ConnectError> {
        AmqpConnector::new(
            urls,
            &TlsFiles {
                ca_file: self.ca_file.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
            },
        )
    }
}
