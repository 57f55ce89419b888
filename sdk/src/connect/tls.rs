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

/// Whether `err` (or an error it wraps, e.g. an `io::Error` carrying a rustls error) is a
/// TLS rejection: the server's certificate did not verify against our CA, or the server
/// refused our certificate (or the lack of one). Retrying will not fix these: they are
/// settings to correct, unlike a server that is down.
pub fn is_tls_rejection(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return rustls_rejection(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return rustls_rejection(r);
            }
        }
        // Some clients keep only the message of the TLS error (rustls' own wording).
        let text = e.to_string();
        if [
            "invalid peer certificate",
            "received fatal alert",
            "peer sent no certificates",
        ]
        .iter()
        .any(|m| text.contains(m))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn rustls_rejection(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::AlertReceived(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::InvalidCertRevocationList(_)
            | rustls::Error::PeerIncompatible(_)
    )
}
