//! TLS material from PEM files, and the one process-wide rustls crypto provider.

use std::path::Path;
use std::sync::Once;

use redis::{ClientTlsConfig, TlsCertificates};

use super::settings::TlsFiles;
use super::ConnectError;

/// rustls needs one process-wide crypto provider when several are compiled in (other crates
/// of a program may enable `ring` next to the default `aws-lc-rs`); install aws-lc-rs once.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only means a provider is already installed, which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates for a TLS Redis connection; `None` when no file is given (then the
/// system's roots verify the server).
pub(crate) fn redis_certificates(
    files: &TlsFiles,
) -> Result<Option<TlsCertificates>, ConnectError> {
    let client_tls = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(ConnectError::Tls(
                "a client certificate needs its key, and a key its certificate".into(),
            ))
        }
    };
    let root_cert = files.ca_file.as_deref().map(read).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}
