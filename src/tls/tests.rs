use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;

use super::*;

/// A self-signed pair for `localhost`, PEM, valid until `year`-01-01.
fn pair(year: i32) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

fn write_pair(dir: &std::path::Path, (cert, key): &(String, String)) -> CertPaths {
    let paths = CertPaths {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&paths.cert, cert).expect("write cert");
    std::fs::write(&paths.key, key).expect("write key");
    paths
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsdrain-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn not_after_reads_the_expiry_of_utc_and_generalized_times() {
    let (cert, _) = pair(2031);
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
    // 2031-01-01T00:00:00Z
    assert_eq!(not_after(&der), Some(1_924_992_000));
    let (cert, _) = pair(2051); // past 2049: GeneralizedTime
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
    assert_eq!(not_after(&der), Some(2_556_144_000));
}

#[test]
fn not_after_of_garbage_is_none_not_a_panic() {
    for bytes in [
        &b""[..],
        b"\x30",
        b"\x30\x84\xff\xff\xff\xff",
        b"\x30\x02\x30\x00",
    ] {
        assert_eq!(not_after(bytes), None);
    }
}

#[test]
fn a_bad_rotation_keeps_the_old_certificate_and_counts_once() {
    let dir = temp_dir("bad-rotation");
    let first = pair(2031);
    let paths = write_pair(&dir, &first);
    let metrics = Metrics::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut reloader = Reloader::new(paths.clone(), provider, metrics.tls()).expect("loads");
    let served = |r: &Reloader| r.current().serving().cert[0].to_vec();
    let before = served(&reloader);
    // A key of another certificate: refused, the old one stays, counted once.
    let other = pair(2032);
    std::fs::write(&paths.key, &other.1).expect("write");
    assert!(!reloader.reload());
    assert!(!reloader.reload());
    assert_eq!(served(&reloader), before);
    let text = metrics.render();
    assert!(text.contains("wsdrain_tls_reload_errors_total 1"), "{text}");
    // The matching certificate arrives: swapped, expiry updated.
    std::fs::write(&paths.cert, &other.0).expect("write");
    assert!(reloader.reload());
    assert_ne!(served(&reloader), before);
    assert!(
        metrics
            .render()
            .contains("wsdrain_tls_cert_not_after_seconds 1956528000")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_the_cap_the_oldest_handshake_is_shed() {
    let slots = HandshakeSlots::new(2);
    let (a, mut shed_a) = slots.enter();
    let (_b, mut shed_b) = slots.enter();
    assert!(shed_a.try_recv().is_err());
    let (_c, _) = slots.enter();
    assert!(shed_a.try_recv().is_ok(), "the oldest is told to go");
    assert!(shed_b.try_recv().is_err(), "the younger one stays");
    drop(a);
    assert_eq!(lock(&slots.waiting).len(), 2);
}

/// Runs `Tls::accept` over a real loopback socket on what a client sends first, and
/// returns what the client read back (an alert, or nothing) once the handshake ended.
async fn accept_bytes(tls: &Tls, bytes: &[u8]) -> (bool, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    client.write_all(bytes).await.expect("write");
    let _ = client.shutdown().await;
    let accepted = tls.accept(server).await.is_some();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut back)).await;
    (accepted, back)
}

#[tokio::test]
async fn a_handshake_message_split_across_records_then_broken_is_refused_not_a_panic() {
    let dir = temp_dir("split");
    let settings = TlsSettings {
        paths: write_pair(&dir, &pair(2099)),
        client_ca: None,
        handshake_timeout: Duration::from_secs(5),
        max_handshakes: 4,
        alpn_http1: true,
    };
    let metrics = Metrics::new();
    let (tls, _reloader) = Tls::new(&settings, &metrics).expect("pair loads");
    // rustls keeps the start of a handshake message that spans records in the caller's
    // buffer; an error while it waits there must not leave rustls pointing into bytes
    // the transport no longer hands it.
    let crafted: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x01, 0x00, // a ClientHello's header
        0xff, 0x03, 0x01, 0x00, 0x01, 0x00, // a record of no content type
    ];
    // What the fuzz target `tls_accept` found (`fuzz/seeds/tls_accept/`).
    let found = include_bytes!("../../fuzz/seeds/tls_accept/split_hello_then_error.bin");
    let (accepted, back) = accept_bytes(&tls, crafted).await;
    assert!(!accepted, "a broken handshake is refused");
    assert_eq!(
        back.first(),
        Some(&0x15),
        "the client is told why: {back:02x?}"
    );
    // Here the error is the handshake joiner's (a message over rustls' size limit), for
    // which rustls queues no alert: refused, and nothing else.
    let (accepted, _) = accept_bytes(&tls, found).await;
    assert!(!accepted, "a broken handshake is refused");
    let _ = std::fs::remove_dir_all(&dir);
}
