//! RabbitMQ connections: `amqp://` or `amqps://` (CA file, optional client certificate),
//! and several broker addresses (cluster nodes) tried in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};

use super::settings::{redact_url, split_list, TlsFiles};
use super::{tls, ConnectError};

/// Whether a failed connection attempt is a setting to fix rather than a broker that is
/// down: a TLS rejection (wrong CA, client certificate refused) or refused credentials.
pub fn is_config_error(e: &lapin::Error) -> bool {
    if tls::is_tls_rejection(e) {
        return true;
    }
    match e.kind() {
        lapin::ErrorKind::IOError(io) => tls::is_tls_rejection(io.as_ref()),
        lapin::ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::ACCESSREFUSED)
                | lapin::protocol::AMQPErrorKind::Hard(lapin::protocol::AMQPHardError::NOTALLOWED)
        ),
        lapin::ErrorKind::AuthProviderError(_) => true,
        _ => false,
    }
}

/// Opens RabbitMQ connections to the first broker of a list that answers, starting after
/// the one that failed last; cheap to clone (clones share the rotation).
#[derive(Clone)]
pub struct AmqpConnector {
    urls: Arc<Vec<String>>,
    tls: OwnedTLSConfig,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for AmqpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("AmqpConnector")
            .field("urls", &urls)
            .finish()
    }
}

impl AmqpConnector {
    /// `urls` is one URL or several separated by commas (cluster nodes); `amqps://` ones
    /// verify the broker against `tls.ca_file` (default: the system roots) and present
    /// `tls.client_cert`/`client_key` when given.
    pub fn new(urls: &str, tls_files: &TlsFiles) -> Result<Self, ConnectError> {
        tls::install_crypto_provider();
        let list = split_list(urls);
        if list.is_empty() {
            return Err(ConnectError::InvalidUrl {
                url: urls.to_string(),
                reason: "no AMQP URL".into(),
            });
        }
        let identity = match (&tls_files.client_cert, &tls_files.client_key) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: tls::read(cert)?,
                key: tls::read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ConnectError::Tls(
                    "a client certificate needs its key, and a key its certificate".into(),
                ))
            }
        };
        let cert_chain =
            match &tls_files.ca_file {
                Some(path) => Some(String::from_utf8(tls::read(path)?).map_err(|_| {
                    ConnectError::Tls(format!("{} is not PEM text", path.display()))
                })?),
                None => None,
            };
        Ok(AmqpConnector {
            urls: Arc::new(list),
            tls: OwnedTLSConfig {
                identity,
                cert_chain,
            },
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The brokers, passwords redacted.
    pub fn describe(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to the first broker that answers, beginning with the one after the last
    /// failure; returns the last error when none does.
    pub async fn connect(
        &self,
        properties: ConnectionProperties,
    ) -> Result<Connection, lapin::Error> {
        let n = self.urls.len();
        let start = self.next.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let url = &self.urls[idx];
            let attempt = DefaultConnectionBuilder::new()?
                .with_uri_str(url.clone())
                .with_properties(properties.clone())
                .with_tls_config(self.tls.clone())
                .connect()
                .await;
            match attempt {
                Ok(conn) => {
                    // A later failure starts with the next node.
                    self.next.store(idx + 1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::warn!(broker = %redact_url(url), error = %e, "RabbitMQ broker not reachable; trying the next");
                    last = Some(e);
                }
            }
        }
        self.next.store(start + 1, Ordering::Relaxed);
        Err(last.unwrap_or_else(|| {
            lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                lapin::ConnectionState::Closed,
            ))
        }))
    }
}
