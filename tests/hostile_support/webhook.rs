//! A real `wsdrain webhook` process on a free loopback port, with a certificate made
//! here, and the smallest AdmissionReview an API server sends it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{free_addr, webhook_command};

/// A `wsdrain webhook` process on a free loopback port with a fresh certificate.
pub struct Webhook {
    pub child: Child,
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Webhook {
    pub async fn start() -> Webhook {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "wsdrain-hostile-webhook-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
        let addr = free_addr();
        let log = dir.join("webhook.log");
        let child = webhook_command(addr, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn wsdrain webhook");
        crate::common::wait_listening(addr, "webhook").await;
        Webhook {
            child,
            addr,
            ca: cert.der().clone(),
            dir,
            log,
        }
    }

    pub fn rss_kib(&self) -> u64 {
        crate::common::rss_kib(self.child.id())
    }

    /// A TLS connection that trusts only this webhook's certificate.
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal AdmissionReview for a pod that is not opted in (answered `allowed`, no
/// patch): what the API server sends for most pods.
pub fn small_review() -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": "default"},
                       "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        }
    })
    .to_string()
    .into_bytes()
}
