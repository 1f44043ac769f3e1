//! TLS for the webhook: a rustls server configuration that follows the certificate and
//! key files on disk.
//!
//! cert-manager renews the webhook's certificate long before it expires, and the kubelet
//! swaps the mounted Secret files atomically. The webhook must pick up the new pair
//! without a restart and without dropping requests: each new connection re-reads both
//! files (a few kilobytes; far cheaper than the handshake itself) and, when they
//! changed, builds a new configuration. Connections already open keep the one they
//! started with. A pair that does not load (say the key was renewed but the certificate
//! not yet) leaves the last good configuration in place and is tried again on the next
//! connection.
//!
//! Flow: the certificate and key files in; a rustls server configuration out, for each
//! new connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// Why a certificate/key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key found ({message})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    config: Arc<ServerConfig>,
}

/// The current TLS configuration, rebuilt when the files change.
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl CertReloader {
    /// Loads the pair once; an error here is fatal (the webhook cannot start).
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let config = build(cert_path, &cert_pem, key_path, &key_pem)?;
        Ok(CertReloader {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                cert_pem,
                key_pem,
                config,
            }),
        })
    }

    /// The configuration for a new connection: re-reads the files and rebuilds when
    /// they changed; on any failure keeps serving the last good pair.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let fresh = read(&self.cert_path).and_then(|c| read(&self.key_path).map(|k| (c, k)));
        match fresh {
            Ok((cert_pem, key_pem)) if cert_pem != loaded.cert_pem || key_pem != loaded.key_pem => {
                match build(&self.cert_path, &cert_pem, &self.key_path, &key_pem) {
                    Ok(config) => {
                        info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                        *loaded = Loaded {
                            cert_pem,
                            key_pem,
                            config,
                        };
                    }
                    Err(e) => {
                        warn!(error = %e, "new TLS certificate not usable yet; serving the previous one")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot re-read the TLS files; serving the previous certificate")
            }
        }
        loaded.config.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn build(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
