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
