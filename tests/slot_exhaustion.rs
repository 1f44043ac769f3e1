//! Stages where a connection waits for its peer's first bytes — the PROXY header, the
//! first request head, the webhook's TLS handshake — are bounded in number, and a crowd
//! of stalled sockets never locks a well-formed client out: the oldest waiting ones
//! are shed to make room, and counted.

mod common;
mod hostile_support;

use std::time::Duration;

use hostile_support::capture_app::start_capture_app;
use hostile_support::webhook::{Webhook, small_review};
use hostile_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Opens `n` connections that each send `prefix` and then wait.
async fn stalled(addr: std::net::SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if !prefix.is_empty() {
            s.write_all(prefix).await.expect("prefix");
        }
        conns.push(s);
    }
    conns
}

/// How many of `conns` the other side has closed (all checked at once, each briefly: a
/// shed one is closed already).
async fn closed_count(conns: &mut [TcpStream]) -> usize {
    let checks = conns
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(500)));
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count()
}

/// Past `MAX_PENDING_HEADERS` stalled PROXY headers, a balancer's well-formed header
/// (in its first packet) still gets through, and the oldest stalled ones are shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_proxy_headers_do_not_lock_out_a_balancer() {
    let bound = wsdrain::proxy_protocol::MAX_PENDING_HEADERS;
    let (app, _heads) = start_capture_app().await;
    let mut proxy = Proxy::start(
        app,
        &["--accept-proxy-protocol", "--handshake-timeout", "30s"],
    )
    .await;
    let extra = 50;
    let mut crowd = stalled(proxy.listen, bound + extra, b"PROXY ").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
        s.write_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 4000 80\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let resp = read_response(&mut s, WAIT)
            .await
            .unwrap_or_else(|e| panic!("well-formed client {i} got no answer: {e}"));
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 200"), "client {i}: {text}");
    }
    // The crowd past the bound was shed, and one more for the first good client (the
    // others found the place it left); the newest stalled ones are still held. Which
    // ones are oldest is decided per data-path thread, so only the newest are named.
    let newest = closed_count(&mut crowd[bound + extra - 10..]).await;
    assert_eq!(newest, 0, "the newest stalled headers are still held");
    let shed = closed_count(&mut crowd).await;
    assert_eq!(shed, extra + 1, "stalled headers shed");
    assert_eq!(
        proxy
            .metric(r#"wsdrain_waiting_shed_total{stage="proxy_header"}"#)
            .await,
        (extra + 1) as u64
    );
    drop(crowd);
    proxy.assert_sound();
}

/// Past `MAX_PENDING_HEADS` connections stalled inside their first request head, a
/// real WebSocket client still gets its 101, and the oldest stalled ones are shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_heads_are_bounded_oldest_first() {
    let bound = wsdrain::proxy::MAX_PENDING_HEADS;
    let (app, _seen) = start_app().await;
    let mut proxy = Proxy::start(app, &["--handshake-timeout", "30s"]).await;
    let extra = 50;
    let mut crowd = stalled(
        proxy.listen,
        bound + extra,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut s = raw_ws(proxy.listen, "/echo").await;
    echo_roundtrip(&mut s, "through the crowd").await;
    let newest = closed_count(&mut crowd[bound + extra - 10..]).await;
    assert_eq!(newest, 0, "the newest stalled heads are still held");
    let shed = closed_count(&mut crowd).await;
    assert_eq!(shed, extra + 1, "stalled heads shed");
    assert_eq!(
        proxy
            .metric(r#"wsdrain_waiting_shed_total{stage="http_head"}"#)
            .await,
        (extra + 1) as u64
    );
    // The upgraded connection left the waiting stage: it is never shed.
    let _more = stalled(proxy.listen, bound, b"GET / HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_roundtrip(&mut s, "still relayed").await;
    drop(crowd);
    proxy.assert_sound();
}

/// Hundreds of idle TCP sockets (no TLS) do not stop a real AdmissionReview from being
/// answered: the pre-TLS stage has its own budget, oldest shed first, and the sockets
/// turned away are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_lock_out_the_webhook() {
    let hook = Webhook::start().await;
    let _crowd = stalled(hook.addr, 400, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let mut tls = hook
            .connect()
            .await
            .unwrap_or_else(|e| panic!("review {i}: TLS handshake failed: {e}"));
        let body = small_review();
        let req = format!(
            "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.expect("request");
        tls.write_all(&body).await.expect("body");
        let resp = read_response(&mut tls, WAIT).await.expect("answer");
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 200"), "review {i}: {text}");
    }
    let mut tls = hook.connect().await.expect("TLS for /metrics");
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("metrics request");
    let text = String::from_utf8_lossy(&read_response(&mut tls, WAIT).await.expect("metrics"))
        .into_owned();
    let refused = common::metric_value(
        &text,
        r#"wsdrain_webhook_connections_refused_total{stage="tls_handshake"}"#,
    );
    assert!(refused >= 1.0, "no refused connection counted:\n{text}");
}
