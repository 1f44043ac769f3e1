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
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tracing::{info, warn};

use crate::tls::{CertError, CertPaths, parse_pair, read_pem as read};

struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    config: Arc<ServerConfig>,
    /// When a problem with the files was last logged, and how many repeats since.
    last_warning: Option<Instant>,
    folded: u64,
}

/// Problems with the TLS files are logged at most this often: every new connection
/// re-reads them, so a broken file would otherwise log once per connection.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Loaded {
    /// Whether to log a problem now, with how many were folded since the last line.
    fn warn_now(&mut self) -> Option<u64> {
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if !due {
            self.folded += 1;
            return None;
        }
        self.last_warning = Some(Instant::now());
        Some(std::mem::take(&mut self.folded))
    }
}

/// The current TLS configuration, rebuilt when the files change.
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl CertReloader {
    /// Loads the pair once; an error here is fatal (the webhook cannot start).
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
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
                last_warning: None,
                folded: 0,
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
                        // A later problem is news again: logged at once.
                        *loaded = Loaded {
                            cert_pem,
                            key_pem,
                            config,
                            last_warning: None,
                            folded: 0,
                        };
                    }
                    Err(e) => {
                        if let Some(folded) = loaded.warn_now() {
                            warn!(error = %e, folded, "new TLS certificate not usable yet; serving the previous one (repeated at most once a minute)")
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(folded) = loaded.warn_now() {
                    warn!(error = %e, folded, "cannot re-read the TLS files; serving the previous certificate (repeated at most once a minute)")
                }
            }
        }
        loaded.config.clone()
    }
}

fn build(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, CertError> {
    let paths = CertPaths {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    };
    let (certs, key) = parse_pair(&paths, cert_pem, key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
