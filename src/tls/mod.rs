//! TLS termination in the pod: `wss://` (and TLS-wrapped TCP in `--mode tcp`) ends at
//! the sidecar, so a Network Load Balancer can pass TCP straight through and the drain
//! still speaks WebSocket to every client: 1012 and the hint inside TLS, then
//! `close_notify`, then the FIN.
//!
//! rustls with the ring provider, TLS 1.2 and 1.3, no client authentication unless
//! `--tls-client-ca` names the CAs to accept client certificates from. The handshake
//! runs after the PROXY header (the balancer's header is plaintext in front of TLS) and
//! before HTTP; it is bounded in time (`--tls-handshake-timeout`) and in number
//! (`--tls-max-handshakes`: at the cap the oldest handshake in progress is dropped, the
//! one most likely to be a stalled or hostile client). Failures are counted by kind;
//! a client that connects and leaves without a word (a TCP health check) is not one.
//!
//! Flow: an accepted socket in from the connection's accept step (`connection`, after any
//! PROXY header); a [`TlsTransport`] out, which hyper serves (the HTTP front end,
//! `proxy`) and the relay drives (after an upgrade, or in `tcp_mode`). This module
//! imports neither: they call it.

mod certs;
mod socket;
mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::debug;

pub use certs::{
    CertError, CertPaths, RELOAD_POLL, Reloader, not_after, parse_pair, read as read_pem,
};
pub use socket::Socket;
pub use transport::TlsTransport;

use crate::metrics::{ErrorKind, Metrics, TlsMetrics};

/// What `wsdrain proxy` was told about TLS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The serving certificate and key.
    pub paths: CertPaths,
    /// CAs whose client certificates are required (mTLS); `None` = no client auth.
    pub client_ca: Option<PathBuf>,
    /// Bound on one handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at most; the oldest is dropped to make room.
    pub max_handshakes: usize,
    /// Offer ALPN `http/1.1` (the WebSocket front end; not in `--mode tcp`).
    pub alpn_http1: bool,
}

/// Why TLS could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The serving pair or the client CA file did not load.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused the configuration (e.g. a client CA it cannot use).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The TLS front of a listener: configuration, handshake limits and their counters.
pub struct Tls {
    config: Arc<ServerConfig>,
    timeout: Duration,
    slots: HandshakeSlots,
    metrics: Metrics,
}

impl Tls {
    /// Loads the pair (fatal if it does not load) and builds the configuration. The
    /// returned [`Reloader`] is to be run ([`Reloader::run`]) so rotations are seen.
    pub fn new(settings: &TlsSettings, metrics: &Metrics) -> Result<(Self, Reloader), SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_metrics: TlsMetrics = metrics.tls();
        let reloader = Reloader::new(settings.paths.clone(), provider.clone(), tls_metrics)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| SetupError::Config(e.to_string()))?;
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs::read_chain(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| SetupError::Config(format!("{}: {e}", path.display())))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| SetupError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(reloader.current());
        if settings.alpn_http1 {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let tls = Tls {
            config: Arc::new(config),
            timeout: settings.handshake_timeout,
            slots: HandshakeSlots::new(settings.max_handshakes),
            metrics: metrics.clone(),
        };
        Ok((tls, reloader))
    }

    /// Runs the handshake on a fresh client socket. `None`: it failed, timed out or was
    /// shed (counted and logged at debug here); the connection is to be dropped.
    pub async fn accept(&self, stream: TcpStream) -> Option<Box<TlsTransport>> {
        let (_slot, shed) = self.slots.enter();
        let handshake = TlsTransport::handshake(stream, self.config.clone());
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, handshake) => r,
            _ = shed => {
                self.metrics.error(ErrorKind::TlsHandshakeShed);
                debug!("TLS handshake dropped: too many in progress");
                return None;
            }
        };
        match outcome {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(e)) => {
                // A peer that leaves before finishing (a TCP health check) is no error.
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    self.metrics.error(ErrorKind::TlsHandshake);
                }
                debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.error(ErrorKind::TlsHandshakeTimeout);
                debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// The handshakes in progress, oldest first, each with the signal that drops it.
struct HandshakeSlots {
    max: usize,
    next: AtomicU64,
    waiting: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
}

/// A handshake's place among those in progress; leaving frees it.
struct Slot {
    id: u64,
    waiting: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
}

impl HandshakeSlots {
    fn new(max: usize) -> Self {
        HandshakeSlots {
            max: max.max(1),
            next: AtomicU64::new(0),
            waiting: Arc::default(),
        }
    }

    /// Takes a place; at the cap, the oldest handshake is told to give up its own.
    fn enter(&self) -> (Slot, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut waiting = lock(&self.waiting);
        while waiting.len() >= self.max {
            match waiting.pop_first() {
                Some((_, oldest)) => {
                    let _ = oldest.send(());
                }
                None => break,
            }
        }
        waiting.insert(id, tx);
        drop(waiting);
        (
            Slot {
                id,
                waiting: self.waiting.clone(),
            },
            rx,
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests;
