//! The serving certificate: loaded from a PEM pair, swapped in place when the files
//! change, and read by every new handshake through rustls' [`ResolvesServerCert`].
//!
//! Kubernetes updates a mounted Secret by pointing its `..data` symlink at a new
//! directory, so an inotify watch on the file itself goes quiet after the first update.
//! Polling is what survives that: once a second both files are read again (a few
//! kilobytes, against a handshake's cost) and compared with what is being served. A
//! changed pair is parsed and checked (key matches certificate) before it replaces the
//! old one; a pair that does not load leaves the old one in place, with one log line
//! and one count per bad pair. Handshakes already done keep what they negotiated.
//!
//! Flow: `--tls-cert`/`--tls-key` (or `--tls-dir`) in; [`CurrentCert`] out to the
//! rustls configuration, and `wsdrain_tls_cert_not_after_seconds` to the metrics.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::metrics::TlsMetrics;

/// How often the certificate files are read again.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
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
    /// rustls refused the pair (unsupported key, or a key of another certificate).
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the pair lives on disk.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// A loaded pair, with the bytes it was loaded from (to see a change).
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
    not_after: Option<i64>,
}

/// The certificate every new handshake gets; replaced by [`CurrentCert::reload`].
#[derive(Debug)]
pub struct CurrentCert {
    key: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    /// The pair being served now.
    pub fn serving(&self) -> Arc<CertifiedKey> {
        match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.serving())
    }
}

/// Follows the files and keeps [`CurrentCert`] up to date.
pub struct Reloader {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    loaded: Loaded,
    /// The last pair that failed, so a bad pair is logged and counted once.
    refused: Option<(Vec<u8>, Vec<u8>)>,
    metrics: TlsMetrics,
}

impl Reloader {
    /// Loads the pair once; an error here is fatal (the proxy cannot start without it).
    pub fn new(
        paths: CertPaths,
        provider: Arc<CryptoProvider>,
        metrics: TlsMetrics,
    ) -> Result<Self, CertError> {
        let cert_pem = read(&paths.cert)?;
        let key_pem = read(&paths.key)?;
        let loaded = load(&paths, &provider, cert_pem, key_pem)?;
        metrics.not_after.set(loaded.not_after.unwrap_or(0));
        Ok(Reloader {
            current: Arc::new(CurrentCert {
                key: RwLock::new(loaded.key.clone()),
            }),
            paths,
            provider,
            loaded,
            refused: None,
            metrics,
        })
    }

    /// The resolver to put in the rustls configuration.
    pub fn current(&self) -> Arc<CurrentCert> {
        self.current.clone()
    }

    /// Reads the files again and swaps the certificate when they hold a new, good pair.
    /// True when the certificate was replaced.
    pub fn reload(&mut self) -> bool {
        let fresh = read(&self.paths.cert).and_then(|c| Ok((c, read(&self.paths.key)?)));
        let (cert_pem, key_pem) = match fresh {
            Ok(pair) => pair,
            // Mid-swap, or the mount is briefly gone: try again on the next poll.
            Err(_) => return false,
        };
        if cert_pem == self.loaded.cert_pem && key_pem == self.loaded.key_pem {
            return false;
        }
        if self
            .refused
            .as_ref()
            .is_some_and(|(c, k)| *c == cert_pem && *k == key_pem)
        {
            return false;
        }
        let pair = (cert_pem.clone(), key_pem.clone());
        match load(&self.paths, &self.provider, cert_pem, key_pem) {
            Ok(loaded) => {
                *match self.current.key.write() {
                    Ok(k) => k,
                    Err(poisoned) => poisoned.into_inner(),
                } = loaded.key.clone();
                self.metrics.not_after.set(loaded.not_after.unwrap_or(0));
                info!(cert = %self.paths.cert.display(), "TLS certificate reloaded");
                self.loaded = loaded;
                self.refused = None;
                true
            }
            Err(e) => {
                self.metrics.reload_errors.inc();
                warn!(error = %e, "new TLS certificate refused; serving the previous one");
                self.refused = Some(pair);
                false
            }
        }
    }

    /// Polls the files every [`RELOAD_POLL`] until the process ends.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload();
        }
    }
}

/// Reads one PEM file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load(
    paths: &CertPaths,
    provider: &CryptoProvider,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
) -> Result<Loaded, CertError> {
    let (chain, key) = parse_pair(paths, &cert_pem, &key_pem)?;
    let not_after = chain.first().and_then(|leaf| not_after(leaf));
    let key = CertifiedKey::from_der(chain, key, provider)?;
    Ok(Loaded {
        cert_pem,
        key_pem,
        key: Arc::new(key),
        not_after,
    })
}

/// A PEM certificate chain (leaf first) and its private key, as rustls takes them; the
/// sidecar's TLS and the admission webhook read their pairs through this one parser.
pub fn parse_pair(
    paths: &CertPaths,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate(paths.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::NoKey {
        path: paths.key.clone(),
        message: e.to_string(),
    })?;
    Ok((chain, key))
}

/// Reads a PEM certificate chain (a client CA bundle): every certificate in the file.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

/// The certificate's notAfter as Unix seconds; `None` if the DER is not the shape
/// RFC 5280 gives it (then the metric reads 0 and the expiry alert says so).
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert_body) = der_item(cert, 0x30)?;
    let (_, mut tbs) = der_item(cert_body, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_any(tbs)?.0; // [0] version
    }
    tbs = der_any(tbs)?.0; // serialNumber
    tbs = der_any(tbs)?.0; // signature
    tbs = der_any(tbs)?.0; // issuer
    let (_, validity) = der_item(tbs, 0x30)?;
    let (rest, _not_before) = der_any(validity)?;
    let tag = *rest.first()?;
    let (_, time) = der_any(rest)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// One DER item of any tag: (what follows it, its content).
fn der_any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len0, rest) = input.get(1..)?.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (&rest[len..], &rest[..len]))
}

/// One DER item that must have `tag`.
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    (*input.first()? == tag).then(|| der_any(input))?
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18).
fn parse_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, sec) = (field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}
