//! `--pod-deletion-cost` against a local HTTPS server standing in for the API server
//! (there is no real one here): it checks each request as the API server would — the
//! path of the pod, the merge-patch content type and body, the bearer token — over TLS
//! with a certificate from a CA that only the service-account `ca.crt` vouches for, and
//! answers as the API does (200 and the pod, or 403 and a Status).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wsdrain::cli::{Cli, Command};
use wsdrain::deletion_cost::{self, ANNOTATION, ApiTarget, DeletionCostError};
use wsdrain::state::Sidecar;

const TOKEN: &str = "service-account-token-for-the-test";

/// A CA and a leaf for 127.0.0.1 it signed: (CA PEM, leaf PEM, leaf key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// What the fake API server saw: (method, path, content type, authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String, String)>>>;

/// Serves HTTPS on 127.0.0.1 with `cert`; answers `status` to every request.
async fn api_server(cert: &str, key: &str, status: u16) -> (SocketAddr, Seen) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let header = |k: &str| {
                            req.headers()
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let (method, path) = (req.method().to_string(), req.uri().to_string());
                        let (ct, auth) = (header("content-type"), header("authorization"));
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        log.lock()
                            .expect("lock")
                            .push((method, path, ct, auth, body));
                        let answer = if status == 200 {
                            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"ws-0"}}"#
                        } else {
                            r#"{"kind":"Status","status":"Failure","reason":"Forbidden","code":403}"#
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A service-account directory with the token, `ca` as ca.crt and the namespace.
fn service_account(dir: &Path, ca: &str) {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
    std::fs::write(dir.join("ca.crt"), ca).expect("ca");
    std::fs::write(dir.join("namespace"), "chat\n").expect("namespace");
}

fn target(dir: &Path, addr: SocketAddr) -> ApiTarget {
    ApiTarget {
        host: "127.0.0.1".into(),
        port: addr.port(),
        token_file: dir.join("token"),
        ca_file: dir.join("ca.crt"),
        namespace: "chat".into(),
        pod: "ws-0".into(),
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsdrain-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test]
async fn one_merge_patch_of_the_own_pod_with_the_token_over_verified_tls() {
    let (ca, cert, key) = certificates();
    let (addr, seen) = api_server(&cert, &key, 200).await;
    let dir = temp_dir("sa-ok");
    service_account(&dir, &ca);
    deletion_cost::write(&target(&dir, addr), 137)
        .await
        .expect("patch accepted");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let (method, path, ct, auth, body) = &seen[0];
    assert_eq!(method, "PATCH");
    assert_eq!(path, "/api/v1/namespaces/chat/pods/ws-0");
    assert_eq!(ct, "application/merge-patch+json");
    assert_eq!(auth, &format!("Bearer {TOKEN}"));
    let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"metadata": {"annotations": {ANNOTATION: "137"}}})
    );
}

#[tokio::test]
async fn a_server_the_ca_does_not_vouch_for_gets_nothing_and_a_refusal_is_an_error() {
    let (ca, _, _) = certificates();
    let (_, other_cert, other_key) = certificates();
    let (addr, seen) = api_server(&other_cert, &other_key, 200).await;
    let dir = temp_dir("sa-wrong-ca");
    service_account(&dir, &ca);
    let err = deletion_cost::write(&target(&dir, addr), 1)
        .await
        .expect_err("untrusted server");
    assert!(
        matches!(&err, DeletionCostError::Transport { message, .. } if message.starts_with("TLS")),
        "{err}"
    );
    assert!(seen.lock().expect("lock").is_empty(), "the token was sent");

    let (ca, cert, key) = certificates();
    let (addr, _) = api_server(&cert, &key, 403).await;
    service_account(&dir, &ca);
    let err = deletion_cost::write(&target(&dir, addr), 1)
        .await
        .expect_err("forbidden");
    assert!(
        matches!(err, DeletionCostError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Forbidden"), "{err}");
}

#[tokio::test]
async fn the_loop_writes_the_count_with_hysteresis_and_not_during_a_drain() {
    let (ca, cert, key) = certificates();
    let (addr, seen) = api_server(&cert, &key, 200).await;
    let dir = temp_dir("sa-loop");
    service_account(&dir, &ca);
    let Ok(Cli {
        command: Command::Proxy(opts),
    }) = Cli::try_parse_from(["wsdrain", "proxy"])
    else {
        panic!("proxy options");
    };
    let sidecar = Sidecar::new(&opts);
    let regs: Vec<_> = (0..20)
        .map(|id| sidecar.connections.register(id, 100).expect("register"))
        .collect();
    let tick = Duration::from_millis(100);
    tokio::spawn(deletion_cost::run(
        sidecar.clone(),
        target(&dir, addr),
        tick,
    ));
    let costs = |seen: &Seen| -> Vec<String> {
        seen.lock()
            .expect("lock")
            .iter()
            .map(|(_, _, _, _, body)| {
                let v: serde_json::Value = serde_json::from_str(body).expect("json");
                v["metadata"]["annotations"][ANNOTATION]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    wait_for(&seen, 1).await;
    // Small moves are not written; a move of 5 is.
    let mut regs = regs;
    regs.truncate(17);
    tokio::time::sleep(tick * 5).await;
    assert_eq!(costs(&seen), ["20"]);
    let regs: Vec<_> = (100..110)
        .map(|id| sidecar.connections.register(id, 100).expect("register"))
        .collect();
    wait_for(&seen, 2).await;
    assert_eq!(costs(&seen), ["20", "27"]);
    // During a drain nothing is written, whatever the count does.
    sidecar.drain.trigger(
        wsdrain::drain::Trigger::Graceful,
        wsdrain::drain::Source::Operator,
    );
    drop(regs);
    tokio::time::sleep(tick * 5).await;
    assert_eq!(costs(&seen), ["20", "27"]);
}

/// Waits (bounded) until the server has seen `n` requests.
async fn wait_for(seen: &Seen, n: usize) {
    for _ in 0..100 {
        if seen.lock().expect("lock").len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
