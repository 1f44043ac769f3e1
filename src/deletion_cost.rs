//! `--pod-deletion-cost`: keeps this pod's `controller.kubernetes.io/pod-deletion-cost`
//! annotation equal to its live connection count, so a ReplicaSet scale-down removes the
//! emptiest pods first and fewer clients have to reconnect.
//!
//! The ReplicaSet controller deletes pods with the lowest cost first; wsdrain knows each
//! pod's connection count, so it can make "cost" mean "clients that would reconnect".
//! Writing on every change would load the API server for nothing, so the value is
//! written with hysteresis (only when it moved by at least [`MIN_STEP`] or a tenth),
//! at most every [`INTERVAL`], and never during a drain (the pod is going away; its
//! annotation no longer matters). The write is one JSON merge patch of the pod's own
//! metadata, authenticated with the pod's service-account token and verified against
//! the service-account CA, over rustls; it needs `patch` on this pod only (the injector
//! adds a Role and RoleBinding when the pod asks).
//!
//! Flow: the connection registry's count in, every [`INTERVAL`]; a `PATCH
//! /api/v1/namespaces/{ns}/pods/{pod}` out when the hysteresis says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::state::Sidecar;

/// The annotation the ReplicaSet controller reads.
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How often the count is looked at (and so the most often it is written).
pub const INTERVAL: Duration = Duration::from_secs(30);
/// The smallest change worth a write.
pub const MIN_STEP: i64 = 5;
/// Where Kubernetes mounts the pod's service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Longest an API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the annotation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeletionCostError {
    /// Something the pod should provide is missing.
    #[error("{0}")]
    Environment(String),
    /// A service-account file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file holds no certificate rustls accepts.
    #[error("{0}: no usable PEM CA certificate")]
    BadCa(PathBuf),
    /// TCP, TLS or HTTP failed.
    #[error("talking to the API server at {addr}: {message}")]
    Transport {
        /// host:port.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The API server answered with an error.
    #[error("the API server answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
}

/// Where and as whom to write: the API server, the credentials, the pod.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    /// API server host (an IP or a name the certificate carries).
    pub host: String,
    /// API server port.
    pub port: u16,
    /// Bearer-token file (re-read per call: the kubelet rotates it).
    pub token_file: PathBuf,
    /// CA certificate file (PEM).
    pub ca_file: PathBuf,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
}

impl ApiTarget {
    /// The target as a pod sees it: `KUBERNETES_SERVICE_HOST`/`_PORT`, the pod name from
    /// `POD_NAME` (the injector sets it from the downward API) or `HOSTNAME`, and the
    /// service account's token, CA and namespace under `dir`.
    pub fn from_env(dir: &Path) -> Result<ApiTarget, DeletionCostError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let host = var("KUBERNETES_SERVICE_HOST").ok_or_else(|| {
            DeletionCostError::Environment(
                "KUBERNETES_SERVICE_HOST is not set: --pod-deletion-cost works inside a pod only"
                    .into(),
            )
        })?;
        let port = var("KUBERNETES_SERVICE_PORT")
            .unwrap_or_else(|| "443".into())
            .parse::<u16>()
            .map_err(|_| {
                DeletionCostError::Environment("KUBERNETES_SERVICE_PORT is not a port".into())
            })?;
        let pod = var("POD_NAME").or_else(|| var("HOSTNAME")).ok_or_else(|| {
            DeletionCostError::Environment("neither POD_NAME nor HOSTNAME is set".into())
        })?;
        let ns_file = dir.join("namespace");
        let namespace = std::fs::read_to_string(&ns_file)
            .map_err(|source| DeletionCostError::Read {
                path: ns_file,
                source,
            })?
            .trim()
            .to_string();
        Ok(ApiTarget {
            host,
            port,
            token_file: dir.join("token"),
            ca_file: dir.join("ca.crt"),
            namespace,
            pod,
        })
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The merge patch that sets the annotation to `cost`.
pub fn patch_body(cost: i64) -> String {
    serde_json::json!({"metadata": {"annotations": {ANNOTATION: cost.to_string()}}}).to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, DeletionCostError> {
    std::fs::read(path).map_err(|source| DeletionCostError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `cost` into the pod's annotation: one PATCH on a fresh TLS connection.
pub async fn write(target: &ApiTarget, cost: i64) -> Result<(), DeletionCostError> {
    let addr = target.addr();
    let transport = |message: String| DeletionCostError::Transport {
        addr: addr.clone(),
        message,
    };
    let token = String::from_utf8_lossy(&read(&target.token_file)?)
        .trim()
        .to_string();
    let ca_pem = read(&target.ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem).filter_map(Result::ok) {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(DeletionCostError::BadCa(target.ca_file.clone()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| transport(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| transport(format!("server name {}: {e}", target.host)))?;
    let call = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| transport(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method("PATCH")
            .uri(format!(
                "/api/v1/namespaces/{}/pods/{}",
                target.namespace, target.pod
            ))
            .header("host", &target.host)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/merge-patch+json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(patch_body(cost))))
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body);
            Err(DeletionCostError::Refused {
                status,
                body: text.chars().take(200).collect(),
            })
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| transport("timed out".into()))?
}

/// When a new count is worth a write.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hysteresis {
    written: Option<i64>,
}

impl Hysteresis {
    /// True when `count` should be written: the first time, or when it moved by at least
    /// [`MIN_STEP`] and a tenth of the last value written.
    pub fn wants(&self, count: i64) -> bool {
        match self.written {
            None => true,
            Some(last) => (count - last).abs() >= MIN_STEP.max(last.abs() / 10),
        }
    }

    /// Records a successful write.
    pub fn written(&mut self, count: i64) {
        self.written = Some(count);
    }
}

/// Keeps the annotation up to date until the process ends: every `interval`, outside a
/// drain, writes the connection count when the hysteresis asks. Failures are logged and
/// retried on the next tick.
pub async fn run(sidecar: Arc<Sidecar>, target: ApiTarget, interval: Duration) {
    info!(pod = %target.pod, namespace = %target.namespace, "keeping {ANNOTATION} at the connection count");
    let mut h = Hysteresis::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if sidecar.drain.is_draining() {
            continue;
        }
        let count = i64::try_from(sidecar.connections.len()).unwrap_or(i64::MAX);
        if !h.wants(count) {
            continue;
        }
        match write(&target, count).await {
            Ok(()) => {
                debug!(cost = count, "pod deletion cost written");
                h.written(count);
            }
            Err(e) => warn!(error = %e, "cannot write the pod deletion cost; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_writes_first_then_only_on_real_moves() {
        let mut h = Hysteresis::default();
        assert!(h.wants(0));
        h.written(0);
        assert!(!h.wants(4) && h.wants(5));
        h.written(1000);
        assert!(!h.wants(1099) && !h.wants(901));
        assert!(h.wants(1100) && h.wants(900));
    }

    #[test]
    fn the_patch_sets_the_annotation_as_a_string() {
        let v: serde_json::Value = serde_json::from_str(&patch_body(42)).expect("json");
        assert_eq!(v["metadata"]["annotations"][ANNOTATION], "42");
    }
}
