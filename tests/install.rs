//! `wsdrain install` end to end, without a cluster: the real binary prints the
//! manifests; the Secret's certificate and key start the real `wsdrain webhook` with the
//! arguments of the printed Deployment; a TLS client that trusts only the printed
//! `caBundle` and checks the name `wsdrain-webhook.<namespace>.svc` (what the API server
//! does) completes the handshake and gets a JSON Patch for a pod labelled
//! `wsdrain.io/inject=enabled`; the webhook's `/metrics` counts the review. Strict
//! schema validation of the same output is in `tests/py/test_install.py`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_wsdrain");

fn install(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("install")
        .args(args)
        .output()
        .expect("run wsdrain install")
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| {
            serde_json::to_value(serde_yaml_ng::Value::deserialize(d).expect("yaml")).expect("json")
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsdrain-install-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One request over TLS that trusts only `ca_pem` and verifies `server_name`.
async fn call(
    addr: SocketAddr,
    ca_pem: &[u8],
    server_name: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes().to_vec()))
}

#[tokio::test]
async fn installed_certificate_and_deployment_args_serve_a_real_admission_review() {
    let ns = "ws-platform";
    let out = install(&[
        "--namespace",
        ns,
        "--kubernetes-version",
        "1.31",
        "--",
        "--drain-window=45s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs = docs(&text);
    let secret = find(&docs, "Secret");
    assert_eq!(secret["metadata"]["namespace"], ns);
    let mwc = find(&docs, "MutatingWebhookConfiguration");
    let webhooks = mwc["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    let ca_bundle = b64(&webhooks[0]["clientConfig"]["caBundle"]);
    assert_eq!(ca_bundle, b64(&webhooks[1]["clientConfig"]["caBundle"]));
    assert_eq!(ca_bundle, b64(&secret["data"]["ca.crt"]));
    assert_eq!(
        webhooks[1]["objectSelector"]["matchLabels"]["wsdrain.io/inject"],
        "enabled"
    );

    let dir = temp_dir("tls");
    std::fs::write(dir.join("tls.crt"), b64(&secret["data"]["tls.crt"])).expect("write");
    std::fs::write(dir.join("tls.key"), b64(&secret["data"]["tls.key"])).expect("write");

    // The Deployment's own arguments, with the listen address and file paths of this test.
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen={addr}")
            } else if a.starts_with("--tls-cert=") {
                format!("--tls-cert={}", dir.join("tls.crt").display())
            } else if a.starts_with("--tls-key=") {
                format!("--tls-key={}", dir.join("tls.key").display())
            } else if a.starts_with("--shutdown-delay=") {
                "--shutdown-delay=0s".to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    assert!(
        args.contains(&"--kubernetes-version=1.31".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--drain-window=45s".to_string()), "{args:?}");
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsdrain webhook");
    common::wait_listening(addr, "webhook").await;

    let ca_pem = String::from_utf8(ca_bundle).expect("pem");
    let service_name = format!("wsdrain-webhook.{ns}.svc");
    // A name the certificate does not carry fails verification: the check is real.
    let wrong = call(
        addr,
        ca_pem.as_bytes(),
        "wsdrain-webhook.elsewhere.svc",
        "GET",
        "/healthz",
        vec![],
    )
    .await;
    assert!(wrong.is_err(), "{wrong:?}");

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "feed", "namespace": "apps", "labels": {"wsdrain.io/inject": "enabled"}},
        "spec": {"containers": [{"name": "feed", "image": "feed:1", "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "install-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps", "operation": "CREATE", "object": pod,
        },
    });
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        call(
            addr,
            ca_pem.as_bytes(),
            &service_name,
            "POST",
            "/mutate",
            serde_json::to_vec(&review).expect("json"),
        ),
    )
    .await
    .expect("in time")
    .expect("review over TLS verified against the caBundle");
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(reply["response"]["uid"], "install-1");
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
    let patch: json_patch::Patch =
        serde_json::from_slice(&b64(&reply["response"]["patch"])).expect("patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    // 1.31 and a named port: the classic sidecar, with the Deployment's drain window.
    let sidecar = patched["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "wsdrain"))
        .expect("classic sidecar in containers");
    assert!(
        sidecar["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--drain-window=45s"))
    );
    assert_eq!(patched["metadata"]["labels"]["wsdrain.io/injected"], "true");

    let (status, metrics) = call(
        addr,
        ca_pem.as_bytes(),
        &service_name,
        "GET",
        "/metrics",
        vec![],
    )
    .await
    .expect("metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("wsdrain_webhook_reviews_total{result=\"injected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wsdrain_webhook_review_duration_seconds_count{result=\"injected\"} 1")
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cert_manager_mode_has_no_secret_and_asks_the_cainjector() {
    let out = install(&["--cert-manager", "--annotation-opt-in"]);
    assert!(out.status.success());
    let docs = docs(&String::from_utf8(out.stdout).expect("utf-8"));
    assert!(docs.iter().all(|d| d["kind"] != "Secret"));
    let mwc = find(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "wsdrain-system/wsdrain-webhook"
    );
    assert_eq!(mwc["webhooks"].as_array().expect("webhooks").len(), 3);
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    let cert = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "wsdrain-webhook")
        .expect("serving Certificate");
    assert_eq!(cert["spec"]["secretName"], "wsdrain-webhook-tls");
}

#[test]
fn bad_install_options_fail_with_one_line() {
    for (args, needle) in [
        (&["--namespace", "Bad_NS"][..], "namespace"),
        (&["--", "--drain-window=soon"][..], "drain-window"),
        (&["--", "--no-such-flag"][..], "no-such-flag"),
    ] {
        let out = install(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
}
