//! The idle-flood run: 2,000 stalled PROXY headers, 2,000 connections stalled inside
//! their first request head and 1,000 idle webhook sockets at once, while 500 real
//! WebSocket clients connect and a drain runs. Every real client gets its 101 and later
//! exactly one close 1012 with a hint, every AdmissionReview is answered, and the
//! proxy's descriptors and memory stay bounded. Minutes of sockets on a shared box, so
//! it is run by hand: `cargo test --test idle_flood -- --ignored --nocapture`.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::capture_app::start_capture_app;
use hostile_support::webhook::{Webhook, small_review};
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &[u8] = b"PROXY TCP4 203.0.113.9 10.0.0.1 4000 80\r\n";

/// Opens `n` connections that each send `bytes` and then wait.
async fn crowd(addr: std::net::SocketAddr, n: usize, bytes: &[u8]) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(bytes).await;
            out.push(s);
        }
    }
    out
}

/// A real client behind the balancer: its PROXY header and upgrade in one packet.
async fn real_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = HEADER.to_vec();
    req.extend_from_slice(
        format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        )
        .as_bytes(),
    );
    s.write_all(&req).await.expect("upgrade");
    let head = read_response(&mut s, Duration::from_secs(30))
        .await
        .expect("answer");
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 101"), "no 101: {text}");
    s
}

/// The close frames a client gets from the drain, after answering the first one.
async fn closes_seen(mut s: TcpStream) -> (Vec<u16>, bool) {
    let mut codes = Vec::new();
    let mut hinted = false;
    if let Some(f) = read_until_close(&mut s, Duration::from_secs(60)).await {
        codes.push(f.close_code().unwrap_or(0));
        hinted = String::from_utf8_lossy(&f.payload[2..]).contains("reconnect_after_ms");
        let _ = s
            .write_all(&frame(true, 8, &1012u16.to_be_bytes(), MASK))
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
        if rest.len() >= 2 && rest[0] & 0x0f == 8 {
            codes.push(0);
        }
    }
    (codes, hinted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of sockets: run by hand"]
async fn idle_flood_with_real_clients_and_a_drain() {
    let (app, _heads) = start_capture_app().await;
    let proxy = Proxy::start(
        app,
        &[
            "--accept-proxy-protocol",
            "--handshake-timeout",
            "60s",
            "--drain-delay",
            "0s",
            "--drain-window",
            "3s",
            "--close-timeout",
            "10s",
        ],
    )
    .await;
    let hook = Webhook::start().await;
    let rss_before = proxy.rss_kib();
    let fds_before = proxy.fds();
    let started = Instant::now();
    let stalled_headers = crowd(proxy.listen, 2000, b"PROXY ").await;
    let mut head = HEADER.to_vec();
    head.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let stalled_heads = crowd(proxy.listen, 2000, &head).await;
    let idle_hook = crowd(hook.addr, 1000, b"").await;
    println!(
        "crowds open: {} + {} + {} sockets in {:?}",
        stalled_headers.len(),
        stalled_heads.len(),
        idle_hook.len(),
        started.elapsed()
    );
    let mut clients = Vec::new();
    let mut max_fds = proxy.fds();
    for i in 0..500 {
        clients.push(real_client(proxy.listen).await);
        if i % 50 == 0 {
            max_fds = max_fds.max(proxy.fds());
        }
    }
    max_fds = max_fds.max(proxy.fds());
    proxy.wait_active(500).await;
    let rss_peak = proxy.rss_kib();
    // Every review is answered through the idle crowd.
    for i in 0..20 {
        let mut tls = hook
            .connect()
            .await
            .unwrap_or_else(|e| panic!("review {i}: {e}"));
        let body = small_review();
        let req = format!(
            "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.expect("request");
        tls.write_all(&body).await.expect("body");
        let resp = read_response(&mut tls, WAIT).await.expect("answer");
        assert!(
            String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"),
            "review {i}"
        );
    }
    let (code, body) = common::http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("drain");
    assert_eq!(code, 202, "{body}");
    let results = futures_util::future::join_all(clients.into_iter().map(closes_seen)).await;
    let exactly_one = results.iter().filter(|(c, h)| c == &[1012] && *h).count();
    println!(
        "real clients with exactly one 1012 + hint: {exactly_one}/500; proxy fds {fds_before} \
         -> max {max_fds}; RSS {rss_before} KiB -> {rss_peak} KiB with everything open; \
         webhook RSS {} KiB; shed: proxy_header {}, http_head {}",
        hook.rss_kib(),
        proxy
            .metric(r#"wsdrain_waiting_shed_total{stage="proxy_header"}"#)
            .await,
        proxy
            .metric(r#"wsdrain_waiting_shed_total{stage="http_head"}"#)
            .await,
    );
    assert_eq!(exactly_one, 500);
    // Budget: both waiting rooms full, two descriptors per real client, and a margin.
    let budget = wsdrain::proxy_protocol::MAX_PENDING_HEADERS
        + wsdrain::proxy::MAX_PENDING_HEADS
        + 2 * 500
        + 64;
    assert!(max_fds <= budget, "{max_fds} descriptors, budget {budget}");
    drop((stalled_headers, stalled_heads, idle_hook));
}
