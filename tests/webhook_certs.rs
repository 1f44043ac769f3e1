//! The webhook re-reads its certificate for every new connection (cert-manager rotates
//! it in place). A broken or missing file keeps the last good pair in service, and is
//! reported in the log once, not once per connection.

mod common;
mod hostile_support;

use std::time::Duration;

use hostile_support::read_response;
use hostile_support::webhook::Webhook;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_is_reported_once_not_per_connection() {
    let hook = Webhook::start().await;
    std::fs::write(hook.dir.join("tls.crt"), b"not a certificate").expect("break the cert");
    for i in 0..20 {
        let mut tls = hook
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connection {i}: the last good pair is not served: {e}"));
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let resp = read_response(&mut tls, Duration::from_secs(5))
            .await
            .expect("answer");
        assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&hook.log).expect("webhook log");
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("TLS"))
        .count();
    assert_eq!(warnings, 1, "warnings about the broken certificate:\n{log}");
}
