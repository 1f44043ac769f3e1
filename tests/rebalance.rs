//! Rebalancing and liveness: max connection age, shedding, and pings to silent clients.

mod common;

use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients, hint_of};
use common::{EchoApp, Proxy, http};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_connections_are_closed_with_a_hint_at_a_bounded_rate() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--max-connection-age",
            "1s",
            "--rebalance-rate",
            "20",
            "--reconnect-jitter",
            "1s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 60, Duration::from_millis(500)).await;
    let reports = collect(tasks, Duration::from_secs(15)).await;
    let mut times: Vec<Instant> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        assert!(r.error.is_none(), "client {i}: {:?}", r.error);
        let (code, reason) = r.close.clone().expect("close frame");
        assert_eq!(code, 1012);
        assert!(hint_of(&reason).is_some_and(|h| h <= 1000), "{reason}");
        times.push(r.close_at.expect("time"));
    }
    times.sort();
    let first = times[0];
    // 60 connections due at once, 20 per second: about three seconds, never a burst.
    let spread = times[59].duration_since(first);
    assert!(
        spread >= Duration::from_millis(2200),
        "all closed within {spread:?}"
    );
    for w in times.windows(26) {
        assert!(
            w[25].duration_since(w[0]) >= Duration::from_millis(900),
            "26 closes within a second"
        );
    }
    assert_eq!(
        proxy
            .metric(r#"wsdrain_rebalance_closed_total{reason="max_age"}"#)
            .await,
        60.0
    );
    assert_eq!(
        proxy.metric("wsdrain_drain_closed_total").await,
        0.0,
        "not counted as a drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_closes_exactly_n_connections_over_the_window() {
    let dir = std::env::temp_dir().join(format!("wsdrain-shed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("token");
    std::fs::write(&token, "t0k").expect("write");
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--drain-window",
            "1s",
            "--admin-token-file",
            token.to_str().expect("utf8"),
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 50, Duration::from_millis(500)).await;
    let (code, _) = http(proxy.admin, "POST", "/shed?count=10", &[], b"")
        .await
        .expect("shed");
    assert_eq!(code, 401, "shedding needs the token");
    let (code, _) = http(
        proxy.admin,
        "POST",
        "/shed?count=ten",
        &[("Authorization", "Bearer t0k")],
        b"",
    )
    .await
    .expect("shed");
    assert_eq!(code, 400);
    let t0 = Instant::now();
    let (code, body) = http(
        proxy.admin,
        "POST",
        "/shed?count=10",
        &[("Authorization", "Bearer t0k")],
        b"",
    )
    .await
    .expect("shed");
    assert_eq!(code, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["shedding"], 10);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        proxy
            .metric_reaching("websocket_connections_active", 40.0, Duration::from_secs(5))
            .await,
        40.0
    );
    assert_eq!(
        proxy
            .metric(r#"wsdrain_rebalance_closed_total{reason="shed"}"#)
            .await,
        10.0
    );
    for t in &tasks {
        if t.is_finished() {
            continue;
        }
    }
    let finished: Vec<_> = tasks.into_iter().filter(|t| t.is_finished()).collect();
    assert_eq!(finished.len(), 10);
    for r in collect(finished, Duration::from_secs(1)).await {
        assert_eq!(r.close.as_ref().map(|c| c.0), Some(1012));
        assert!(r.close_at.expect("time").duration_since(t0) < Duration::from_millis(1500));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Opens a WebSocket by hand and then never reads or answers anything.
async fn silent_client(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            proxy.listen
        )
        .as_bytes(),
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_and_healthy_idle_ones_stay() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &["--ping-interval", "300ms", "--ping-timeout", "400ms"],
    )
    .await;
    // A healthy idle client: reads (so its library answers pings) but never sends data.
    let (healthy, _) = connect_async(proxy.url("/")).await.expect("connect");
    let (_sink, mut stream) = healthy.split();
    let healthy_task = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_ping() {
                pings += 1;
            }
        }
        pings
    });
    let _silent = silent_client(&proxy).await;
    assert_eq!(
        proxy
            .metric_reaching("websocket_connections_active", 2.0, Duration::from_secs(5))
            .await,
        2.0
    );
    let t0 = Instant::now();
    loop {
        let active = proxy.metric("websocket_connections_active").await;
        if active == 1.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the silent client is still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "closed only after interval + timeout"
    );
    // The healthy client keeps being pinged and stays connected.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.metric("websocket_connections_active").await, 1.0);
    assert_eq!(
        proxy
            .metric(r#"websocket_errors_total{kind="ping_timeout"}"#)
            .await,
        1.0
    );
    assert!(!healthy_task.is_finished());
    healthy_task.abort();
    let seen = app.seen.lock().expect("lock");
    assert_eq!(
        seen.pongs, 0,
        "the app never sees the answers to wsdrain's pings"
    );
    assert!(
        seen.close_codes.contains(&Some(1001)),
        "the app was told the silent client went away"
    );
}
