//! `--mode tcp`: a byte relay with the same counting, limits and staggered drain.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo app: writes back everything, closes after the client's FIN.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_equal_bytes_out_for_random_sizes() {
    let app = tcp_echo().await;
    let proxy = Proxy::start(app, &["--mode", "tcp"]).await;
    const SIZES: [usize; 9] = [1, 7, 100, 4096, 16_384, 16_385, 65_536, 1 << 20, 3_000_001];
    let total: usize = SIZES.iter().sum();
    // One connection per size; each writes and reads at the same time.
    for (i, len) in SIZES.into_iter().enumerate() {
        let data = pseudo_random(i as u64, len);
        let s = TcpStream::connect(proxy.listen).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("fin");
        });
        let mut back = Vec::with_capacity(len);
        tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut back))
            .await
            .expect("in time")
            .expect("read");
        writer.await.expect("writer");
        assert!(back == data, "size {len}: {} bytes back", back.len());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        proxy
            .metric(r#"websocket_bytes_total{direction="client_to_app"}"#)
            .await,
        total as f64
    );
    assert_eq!(
        proxy
            .metric(r#"websocket_bytes_total{direction="app_to_client"}"#)
            .await,
        total as f64
    );
    assert_eq!(proxy.metric("websocket_connections_total").await, 9.0);
    assert_eq!(proxy.metric("websocket_connections_active").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_and_a_staggered_fin_drain() {
    const N: usize = 1000;
    let app = tcp_echo().await;
    let mut proxy = Proxy::start(
        app,
        &[
            "--mode",
            "tcp",
            "--drain-delay",
            "200ms",
            "--drain-window",
            "2s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let mut conns = Vec::new();
    for i in 0..N {
        let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
        let msg = format!("hello {i:04}");
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.expect("echo");
        assert_eq!(buf, msg.as_bytes());
        conns.push(s);
    }
    assert_eq!(
        proxy
            .metric_reaching(
                "websocket_connections_active",
                N as f64,
                Duration::from_secs(5)
            )
            .await,
        N as f64
    );
    let t0 = Instant::now();
    proxy.signal("TERM");
    // Each client waits for the proxy's FIN, then closes its side.
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.expect("read");
                assert_eq!(n, 0, "the drain sends a FIN, no bytes");
                Instant::now()
            })
        })
        .collect();
    let mut fins = Vec::new();
    for t in tasks {
        fins.push(
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("in time")
                .expect("task"),
        );
    }
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
    let stagger = t0 + Duration::from_millis(200);
    let mut tenths = [0usize; 10];
    for f in fins {
        let slot = (f.saturating_duration_since(stagger).as_secs_f64() / 0.2) as usize;
        tenths[slot.min(9)] += 1;
    }
    for (i, n) in tenths.iter().enumerate() {
        assert!(
            (50..=200).contains(n),
            "tenth {i}: {n} FINs, even share 100: {tenths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_malformed_proxy_headers_are_refused() {
    let app = tcp_echo().await;
    let proxy = Proxy::start(
        app,
        &[
            "--mode",
            "tcp",
            "--max-connections",
            "1",
            "--accept-proxy-protocol",
        ],
    )
    .await;
    let mut ok = TcpStream::connect(proxy.listen).await.expect("connect");
    ok.write_all(b"PROXY TCP4 203.0.113.5 10.0.0.1 4242 15080\r\nping")
        .await
        .expect("write");
    let mut buf = [0u8; 4];
    ok.read_exact(&mut buf)
        .await
        .expect("echo after the header");
    assert_eq!(&buf, b"ping", "the header is consumed, the payload relayed");
    // Over the limit: closed at once.
    let mut over = TcpStream::connect(proxy.listen).await.expect("connect");
    over.write_all(b"PROXY TCP4 203.0.113.6 10.0.0.1 4243 15080\r\n")
        .await
        .expect("write");
    let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(
        proxy
            .metric(r#"wsdrain_upgrades_rejected_total{reason="max_connections"}"#)
            .await,
        1.0
    );
    // Malformed headers: closed, counted, and the healthy connection is untouched.
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
        s.write_all(bad).await.expect("write");
        let n = tokio::time::timeout(Duration::from_secs(12), s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{bad:?}");
    }
    assert_eq!(
        proxy
            .metric(r#"websocket_errors_total{kind="proxy_protocol"}"#)
            .await,
        3.0
    );
    ok.write_all(b"pong").await.expect("write");
    ok.read_exact(&mut buf).await.expect("still relayed");
    assert_eq!(&buf, b"pong");
}
