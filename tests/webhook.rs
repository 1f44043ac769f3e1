//! The admission webhook over real HTTPS on 127.0.0.1, with certificates made here by
//! rcgen: the JSON Patch it answers, applied with a JSON Patch implementation, gives
//! exactly what `wsdrain inject` gives; dry-run, non-pod, not-opted-in and malformed
//! requests; a certificate rotated on disk is served on the next connection; and the
//! `wsdrain webhook` binary itself starts, answers and stops on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use wsdrain::cli::{Cli, Command};
use wsdrain::inject::{InjectConfig, Settings, TOKEN_ANNOTATION, inject_documents, inject_pod};
use wsdrain::webhook::{self, tls::CertReloader};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/inject");

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

fn make_ca() -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wsdrain test CA");
    let cert = params.self_signed(&key).expect("CA");
    Ca {
        der: cert.der().clone(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf for 127.0.0.1 signed by `ca`: (cert PEM, key PEM, cert DER).
fn make_leaf(ca: &Ca, cn: &str) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsdrain-webhook-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.join("tls.key"), key).expect("key");
}

fn inject_config() -> InjectConfig {
    let Ok(Cli {
        command: Command::Inject(opts),
    }) = Cli::try_parse_from(["wsdrain", "inject"])
    else {
        panic!("inject options");
    };
    InjectConfig {
        defaults: Settings::from(&opts.defaults),
        all: false,
        token: None,
        upgrade: true,
    }
}

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    ca: Ca,
}

async fn start(tag: &str) -> (Server, Vec<u8>) {
    let ca = make_ca();
    let dir = temp_dir(tag);
    let (cert, key, der) = make_leaf(&ca, "first");
    write_pair(&dir, &cert, &key);
    let certs =
        Arc::new(CertReloader::new(&dir.join("tls.crt"), &dir.join("tls.key")).expect("certs"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(webhook::serve(listener, certs, Arc::new(inject_config())));
    (Server { addr, dir, ca }, der)
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    peer_cert: Vec<u8>,
}

/// One request on a new TLS connection that trusts only the test CA.
async fn call(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Reply {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("peer certificate");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        body,
        peer_cert,
    }
}

fn review(uid: &str, kind: &str, object: &Value, dry_run: bool) -> Vec<u8> {
    let (group, resource) = match kind {
        "Pod" => ("", "pods"),
        _ => ("apps", "deployments"),
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "requestKind": {"group": group, "version": "v1", "kind": kind},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }))
    .expect("json")
}

/// The pods the fixtures describe, as the API server would send them.
fn fixture_pods() -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    for name in [
        "deployment-guide.yaml",
        "statefulset.yaml",
        "pod-own-prestop.yaml",
        "list.yaml",
    ] {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture");
        let doc: Value = serde_yaml_ng::from_str(&text).expect("yaml");
        let template = if doc["kind"] == "Pod" {
            doc.clone()
        } else if doc["kind"] == "List" {
            doc["items"][0]["spec"]["template"].clone()
        } else {
            doc["spec"]["template"].clone()
        };
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        pod["metadata"] = template["metadata"].clone();
        pod["spec"] = template["spec"].clone();
        pods.push((name.to_string(), pod));
    }
    pods
}

/// Decodes the response, checking the raw JSON shape the API server insists on.
fn decode(reply: &Reply, uid: &str) -> (Value, Option<json_patch::Patch>) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v: Value = serde_json::from_slice(&reply.body).expect("response JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], uid);
    assert_eq!(v["response"]["allowed"], true);
    let patch = match v["response"].get("patch") {
        None => {
            assert!(v["response"].get("patchType").is_none());
            None
        }
        Some(p) => {
            let s = p
                .as_str()
                .expect("patch must be a base64 string, not an array");
            assert_eq!(v["response"]["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64");
            let ops: Value = serde_json::from_slice(&raw).expect("patch JSON");
            assert!(ops.is_array(), "a JSON Patch is an array of operations");
            Some(serde_json::from_value(ops).expect("JSON Patch"))
        }
    };
    (v, patch)
}

fn apply(pod: &Value, patch: &json_patch::Patch) -> Value {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).expect("patch applies");
    out
}

#[tokio::test]
async fn patch_applied_equals_inject_output_and_dry_run_gets_the_same() {
    let (server, _) = start("equal").await;
    for (name, pod) in fixture_pods() {
        for dry_run in [false, true] {
            let uid = format!("{name}-{dry_run}");
            let reply = call(
                server.addr,
                &server.ca.der,
                "POST",
                "/mutate",
                review(&uid, "Pod", &pod, dry_run),
            )
            .await;
            let (v, patch) = decode(&reply, &uid);
            let patched = apply(&pod, &patch.unwrap_or_else(|| panic!("{name}: no patch")));
            let token = patched["metadata"]["annotations"][TOKEN_ANNOTATION]
                .as_str()
                .expect("token")
                .to_string();
            assert_eq!(token.len(), 64, "random per-pod token");
            // What `wsdrain inject --token <that token>` writes for the same pod.
            let yaml = serde_yaml_ng::to_string(&pod).expect("yaml");
            let mut cfg = inject_config();
            cfg.token = Some(token.clone());
            let out = inject_documents(&yaml, &cfg).expect("inject");
            let expected: Value = serde_yaml_ng::from_str(&out.text).expect("yaml");
            assert_eq!(patched, expected, "{name} dry_run={dry_run}");
            // And the library function directly.
            let mut direct: Map<String, Value> = pod.as_object().cloned().expect("object");
            inject_pod(&mut direct, &cfg, false);
            assert_eq!(patched, Value::Object(direct));
            // Warnings travel in the response.
            let warnings = v["response"]["warnings"].as_array().map_or(0, Vec::len);
            assert_eq!(warnings, out.warnings.len(), "{name}");
        }
    }
    let _ = std::fs::remove_dir_all(&server.dir);
}

#[tokio::test]
async fn non_pods_and_pods_not_opted_in_are_allowed_unchanged() {
    let (server, _) = start("unchanged").await;
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate",
        review("u1", "Deployment", &deployment, false),
    )
    .await;
    assert!(decode(&reply, "u1").1.is_none());

    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 80}]}]}});
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate",
        review("u2", "Pod", &plain, false),
    )
    .await;
    assert!(decode(&reply, "u2").1.is_none());
    // The same pod in a namespace labelled wsdrain.io/inject=enabled.
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate?namespace=enabled",
        review("u3", "Pod", &plain, false),
    )
    .await;
    let patched = apply(&plain, &decode(&reply, "u3").1.expect("patch"));
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "wsdrain");
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate/namespace-enabled",
        review("u5", "Pod", &plain, false),
    )
    .await;
    assert!(decode(&reply, "u5").1.is_some());
    // Reinvocation: the injected pod comes back and nothing changes.
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate?namespace=enabled",
        review("u4", "Pod", &patched, false),
    )
    .await;
    assert!(decode(&reply, "u4").1.is_none());
    let _ = std::fs::remove_dir_all(&server.dir);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_message() {
    let (server, _) = start("malformed").await;
    let cases: [(&[u8], &str); 4] = [
        (b"this is not json", "not an AdmissionReview"),
        (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x","kind":{"kind":"Pod"}}}"#, "expected apiVersion admission.k8s.io/v1"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#, "not an AdmissionReview"),
    ];
    for (body, needle) in cases {
        let reply = call(
            server.addr,
            &server.ca.der,
            "POST",
            "/mutate",
            body.to_vec(),
        )
        .await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 400, "{text}");
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let reply = call(server.addr, &server.ca.der, "GET", "/healthz", Vec::new()).await;
    assert_eq!(reply.status, 200);
    let reply = call(server.addr, &server.ca.der, "GET", "/mutate", Vec::new()).await;
    assert_eq!(reply.status, 405);
    let _ = std::fs::remove_dir_all(&server.dir);
}

#[tokio::test]
async fn rotated_certificate_is_served_on_the_next_connection() {
    let (server, first_der) = start("rotate").await;
    let reply = call(server.addr, &server.ca.der, "GET", "/healthz", Vec::new()).await;
    assert_eq!(reply.peer_cert, first_der);
    let (cert, key, second_der) = make_leaf(&server.ca, "second");
    write_pair(&server.dir, &cert, &key);
    let reply = call(server.addr, &server.ca.der, "GET", "/healthz", Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.peer_cert, second_der,
        "the rotated certificate is served"
    );
    // A half-written rotation (key of another pair) keeps the last good certificate.
    let (_, other_key, _) = make_leaf(&server.ca, "third");
    std::fs::write(server.dir.join("tls.key"), other_key).expect("key");
    let reply = call(server.addr, &server.ca.der, "GET", "/healthz", Vec::new()).await;
    assert_eq!(reply.peer_cert, second_der);
    let _ = std::fs::remove_dir_all(&server.dir);
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let ca = make_ca();
    let dir = temp_dir("binary");
    let (cert, key, _) = make_leaf(&ca, "bin");
    write_pair(&dir, &cert, &key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = tokio::process::Command::from(common::webhook_command(addr, &dir))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsdrain webhook");
    common::wait_listening(addr, "webhook").await;
    let reply = call(addr, &ca.der, "GET", "/healthz", Vec::new()).await;
    assert_eq!(reply.status, 200);
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10s")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_pod_injected_by_an_older_wsdrain_is_upgraded_on_creation() {
    let (server, _) = start("upgrade").await;
    // A pod created from a template an older `wsdrain inject` wrote: older image and
    // version annotation, with its undo record.
    let plain = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "feed", "labels": {"wsdrain.io/inject": "enabled"}},
        "spec": {"containers": [{"name": "feed", "image": "feed:1",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let mut old_cfg = inject_config();
    old_cfg.defaults.image = "wsdrain/wsdrain:0.0.9".into();
    old_cfg.token = Some("old-token-0123456789abcdef".into());
    let mut old = plain.as_object().cloned().expect("object");
    inject_pod(&mut old, &old_cfg, false);
    old["metadata"]["annotations"]["wsdrain.io/version"] = json!("0.0.9");
    let old = Value::Object(old);

    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate",
        review("up-1", "Pod", &old, false),
    )
    .await;
    let (v, patch) = decode(&reply, "up-1");
    let upgraded = apply(&old, &patch.expect("a patch that upgrades"));
    let image = |pod: &Value| {
        pod["spec"]["initContainers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "wsdrain"))
            .map(|c| c["image"].clone())
    };
    assert_eq!(image(&old), Some(json!("wsdrain/wsdrain:0.0.9")));
    assert_eq!(
        image(&upgraded),
        Some(json!(inject_config().defaults.image))
    );
    assert_eq!(
        upgraded["metadata"]["annotations"]["wsdrain.io/version"],
        env!("CARGO_PKG_VERSION")
    );
    // Exactly one sidecar, the token kept (the pod's own annotation is reused).
    assert_eq!(
        upgraded["spec"]["initContainers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        upgraded["metadata"]["annotations"][TOKEN_ANNOTATION],
        "old-token-0123456789abcdef"
    );
    let warnings = v["response"]["warnings"].to_string();
    assert!(
        warnings.contains("upgraded the sidecar from wsdrain 0.0.9"),
        "{warnings}"
    );

    // Re-invoked on the upgraded pod: nothing more to do.
    let reply = call(
        server.addr,
        &server.ca.der,
        "POST",
        "/mutate",
        review("up-2", "Pod", &upgraded, false),
    )
    .await;
    assert!(decode(&reply, "up-2").1.is_none());
    let _ = std::fs::remove_dir_all(&server.dir);
}
