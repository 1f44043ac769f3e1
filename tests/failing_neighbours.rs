//! Failing neighbours over real sockets: an app that refuses, resets, stalls, dies
//! mid-message or answers garbage, clients that vanish or half-close, a hammered admin
//! port, slow readers on either side, the connection limit and running out of file
//! descriptors. Each test asserts the answer each side gets, that a healthy connection
//! keeps working, and that the proxy neither died nor panicked.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::capture_app::*;
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The app's port is closed: 502, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_refusing_gets_502() {
    let closed = common::free_addr();
    let mut proxy = Proxy::start(closed, &[]).await;
    let before = proxy.errors("upstream_connect").await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
    assert_eq!(status(&resp), 502, "got {resp:?}");
    assert_eq!(proxy.errors("upstream_connect").await, before + 1);
    let resp = http_raw(proxy.listen, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&resp), 502, "got {resp:?}");
    assert!(proxy.errors("upstream_http").await >= 1);
    let resp = http_raw(proxy.admin, b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&resp), 503, "got {resp:?}");
    proxy.assert_sound();
}

/// The app resets or hangs up after reading the upgrade request: 502, counted as
/// upstream_handshake (the TCP connection to the app did open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_resetting_mid_handshake_gets_502() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    for path in ["/reset", "/hangup"] {
        let before = proxy.errors("upstream_handshake").await;
        let connect_before = proxy.errors("upstream_connect").await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
        assert_eq!(status(&resp), 502, "{path}: got {resp:?}");
        assert_eq!(
            proxy.errors("upstream_handshake").await,
            before + 1,
            "{path}"
        );
        assert_eq!(
            proxy.errors("upstream_connect").await,
            connect_before,
            "{path}"
        );
    }
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// The app accepts but never answers the upgrade: 504 after --handshake-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_stalling_mid_handshake_gets_504() {
    let (mut proxy, _seen, mut healthy) = setup(&["--handshake-timeout", "1s"]).await;
    let before = proxy.errors("upstream_timeout").await;
    let req = format!(
        "GET /stall HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let fds_before = proxy.fds();
    for _ in 0..3 {
        let started = Instant::now();
        let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(status(&resp), 504, "got {resp:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "504 after {took:?}"
        );
    }
    assert_eq!(proxy.errors("upstream_timeout").await, before + 3);
    // The connections to the stalled app are closed, not leaked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_after = proxy.fds();
    assert!(
        fds_after <= fds_before + 1,
        "descriptors grew from {fds_before} to {fds_after} after 3 stalled upgrades"
    );
    // The registration taken for the stalled upgrade is released.
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A stalled plain HTTP request is bounded too (the app never answers): 504 after
/// --response-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_stalling_plain_request_is_bounded() {
    let (mut proxy, _seen, _healthy) = setup(&["--response-timeout", "2s"]).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET /stall-http HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let resp = read_response(&mut s, Duration::from_secs(8)).await.unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    assert!(
        !resp.is_empty(),
        "no answer within 8 s to a stalled plain request"
    );
    assert_eq!(status(&resp), 504, "got {resp:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 after {:?}",
        started.elapsed()
    );
    assert!(proxy.errors("upstream_timeout").await >= 1);
    proxy.assert_sound();
}

/// The app dies at a frame boundary: the client gets a close frame with the reconnect
/// hint instead of a bare TCP close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_dying_gets_close_with_hint() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let before = proxy.errors("app_gone").await;
    let mut s = raw_ws(proxy.listen, "/die").await;
    s.write_all(&client_text("last words")).await.unwrap();
    let close = read_until_close(&mut s, WAIT)
        .await
        .expect("no close frame");
    assert_eq!(close.close_code(), Some(1012));
    let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
    assert!(reason.contains("reconnect_after_ms"), "reason {reason:?}");
    assert_eq!(proxy.errors("app_gone").await, before + 1);
    assert!(answer_close(&mut s, 1012, WAIT).await);
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// The app dies in the middle of a frame: nothing can be injected (it would land inside
/// the frame), so the client connection is closed; counted as app_gone_mid_frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_dying_mid_message_closes_client() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let before = proxy.errors("app_gone_mid_frame").await;
    let mut s = raw_ws(proxy.listen, "/die-mid-frame").await;
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "client not closed {:?} after the app died",
                started.elapsed()
            ),
        }
    }
    // Exactly the bytes the app sent, and no close frame spliced into the payload.
    assert_eq!(got.len(), 1000, "client got {} bytes", got.len());
    assert_eq!(proxy.errors("app_gone_mid_frame").await, before + 1);
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A client that vanishes with a reset (process killed, NAT entry gone and the next
/// segment answered with RST): the app gets a close, the connection leaves the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_is_noticed() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let before = proxy.errors("client_gone").await + proxy.errors("client_reset").await;
    for _ in 0..5 {
        let mut s = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut s, "about to vanish").await;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST, no FIN, no close frame
    }
    proxy.wait_active(1).await;
    let after = proxy.errors("client_gone").await + proxy.errors("client_reset").await;
    assert_eq!(after, before + 5);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A truly half-open client (no FIN, no RST: the peer is simply gone) is only noticed
/// by keepalive probes or WebSocket pings; without either the connection is held, and
/// counted in websocket_connections_active (what the HPA sees), forever. The accepted
/// sockets inherit TCP keepalive from the listener: /proc/net/tcp shows its timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_client_is_detected() {
    let (mut proxy, _seen, _healthy) = setup(&[]).await;
    // Find the proxy's accepted socket for this client in /proc/net/tcp: its timer
    // field ("tr") is 2 while a keepalive timer is armed, 0 when none is.
    let s = raw_ws(proxy.listen, "/echo").await;
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        other => panic!("unexpected address {other}"),
    };
    let (local, remote) = (hex(proxy.listen), hex(s.local_addr().unwrap()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let row = table
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 5 && f[1] == local && f[2] == remote
        })
        .unwrap_or_else(|| panic!("proxy socket {local} -> {remote} not in /proc/net/tcp"));
    let timer = row.split_whitespace().nth(5).unwrap();
    assert!(
        timer.starts_with("02:"),
        "no keepalive timer on the proxy's client socket: {row}"
    );
    drop(s);
    proxy.assert_sound();
}

/// The admin port hammered (bounded) while a connection relays: every admin request is
/// answered correctly and the relay never stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hammered_while_relaying() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let admin = proxy.admin;
    let hammer = tokio::spawn(async move {
        let paths = [
            ("GET /metrics", 200),
            ("GET /healthz", 200),
            ("GET /readyz", 200),
            ("GET /drain", 200),
            ("GET /nope", 404),
            ("PUT /drain", 405),
        ];
        let mut tasks = Vec::new();
        for w in 0..8 {
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                for i in 0..150 {
                    let (req, want) = paths[(i + w) % paths.len()];
                    let raw = format!("{req} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
                    let resp = http_raw(admin, raw.as_bytes()).await.unwrap();
                    assert_eq!(status(&resp), want, "{req}: {resp:.200}");
                    n += 1;
                }
                // Garbage and half requests too.
                for _ in 0..20 {
                    let _ = http_raw(admin, b"\x00\x01\x02 garbage\r\n\r\n").await;
                    let mut s = TcpStream::connect(admin).await.unwrap();
                    let _ = s.write_all(b"GET /metr").await;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while !hammer.is_finished() {
        let t = Instant::now();
        echo_roundtrip(&mut healthy.s, "under load").await;
        worst = worst.max(t.elapsed());
        rounds += 1;
    }
    let total = hammer.await.unwrap();
    assert_eq!(total, 8 * 150);
    assert!(
        rounds > 10,
        "only {rounds} echoes while the admin port was hammered"
    );
    assert!(worst < Duration::from_secs(2), "an echo took {worst:?}");
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A client that stops reading while the app floods: the proxy stops reading from the
/// app (backpressure) instead of buffering, so its RSS stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reading_client_keeps_rss_bounded() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let base = proxy.rss_kib();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = raw_ws(proxy.listen, "/flood").await;
        // Read a little, then stop reading altogether.
        let mut b = vec![0u8; 64 * 1024];
        let _ = timeout(WAIT, s.read_exact(&mut b)).await;
        slow.push(s);
    }
    let mut peak = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(proxy.rss_kib());
    }
    let bytes = proxy
        .metric("websocket_bytes_total{direction=\"app_to_client\"}")
        .await;
    // A few MiB of socket-side slack is the kernel's; the proxy itself must not grow
    // by more than a small, fixed amount per stalled connection.
    assert!(
        peak < base + 16 * 1024,
        "RSS grew from {base} KiB to {peak} KiB with 4 stalled readers ({bytes} bytes relayed)"
    );
    // Relayed bytes stop growing: backpressure reached the app.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = proxy
        .metric("websocket_bytes_total{direction=\"app_to_client\"}")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let latest = proxy
        .metric("websocket_bytes_total{direction=\"app_to_client\"}")
        .await;
    assert_eq!(
        later, latest,
        "bytes still flowing to clients that do not read"
    );
    healthy.check(&proxy).await;
    drop(slow);
    proxy.wait_active(1).await;
    proxy.assert_sound();
}

/// The mirror case: the app stops reading while the client floods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reading_app_keeps_rss_bounded() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let base = proxy.rss_kib();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let mut s = raw_ws(proxy.listen, "/sink").await;
        writers.push(tokio::spawn(async move {
            let f = frame(true, 2, &vec![3u8; 64 * 1024], MASK);
            let mut sent = 0usize;
            while let Ok(Ok(())) = timeout(Duration::from_secs(1), s.write_all(&f)).await {
                sent += f.len();
                if sent > 512 << 20 {
                    break;
                }
            }
            (s, sent)
        }));
    }
    let mut peak = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(proxy.rss_kib());
    }
    let mut total = 0;
    let mut keep = Vec::new();
    for w in writers {
        let (s, sent) = w.await.unwrap();
        total += sent;
        keep.push(s);
    }
    assert!(total < 4 * (512 << 20), "the app side never pushed back");
    assert!(
        peak < base + 16 * 1024,
        "RSS grew from {base} KiB to {peak} KiB with 4 stalled app readers"
    );
    healthy.check(&proxy).await;
    drop(keep);
    proxy.assert_sound();
}

/// Upgrade requests over --max-connections get 503 with Retry-After; the healthy ones
/// are untouched and a slot frees when one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds() {
    let (mut proxy, _seen, mut healthy) = setup(&["--max-connections", "3"]).await;
    let a = raw_ws(proxy.listen, "/echo").await;
    let _b = raw_ws(proxy.listen, "/echo").await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
    assert_eq!(status(&resp), 503, "got {resp:?}");
    assert!(resp.to_ascii_lowercase().contains("retry-after"));
    drop(a);
    proxy.wait_active(2).await;
    echo_roundtrip(&mut healthy.s, "still here").await;
    let mut c = raw_ws(proxy.listen, "/echo").await;
    echo_roundtrip(&mut c, "took the freed slot").await;
    proxy.assert_sound();
}

/// EMFILE: with a tiny open-file limit the accept loop fails; it must warn at start-up
/// about the limit, log accept failures at a bounded rate, count them, not spin, and
/// serve again once descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emfile_is_rate_limited_and_recovers() {
    let (app, _seen) = start_app().await;
    let mut proxy = Proxy::start_limited(app, &["--max-connections", "1000"], Some(48)).await;
    assert!(
        proxy.log_text().contains("open-file limit is below"),
        "no start-up warning about the descriptor limit:\n{}",
        proxy.log_text()
    );
    // Exhaust the proxy's descriptors with idle client connections.
    let mut hogs = Vec::new();
    for _ in 0..80 {
        if let Ok(Ok(s)) = timeout(Duration::from_secs(1), TcpStream::connect(proxy.listen)).await {
            hogs.push(s);
        }
    }
    let cpu_before = proxy.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = proxy.cpu_ticks() - cpu_before;
    let ticks_per_sec = 100; // USER_HZ on Linux
    assert!(
        cpu < 3 * ticks_per_sec / 2,
        "proxy burnt {cpu} ticks in 3 s while out of descriptors (busy loop?)"
    );
    let warnings = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(warnings >= 1, "accept failures not logged");
    assert!(
        warnings <= 8,
        "{warnings} accept warnings in ~3 s: not rate limited"
    );
    drop(hogs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Serves again, and counted the failures.
    let mut s = raw_ws(proxy.listen, "/echo").await;
    echo_roundtrip(&mut s, "back in business").await;
    assert!(
        proxy.errors("accept").await >= 1,
        "accept errors not counted"
    );
    proxy.assert_sound();
}

/// An app that closes a keep-alive connection right after answering (a keep-alive
/// timeout expiring, a server recycling its connections) races the proxy's pooled
/// client: a request written onto the closing connection fails with a reset, and the
/// client gets a 502 although the app is healthy. GET is idempotent and nothing of the
/// answer had arrived, so RFC 9112 §9.3.1 allows a retry on a fresh connection.
/// A race: a handful of the 4,000 requests hit it in almost every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_closed_by_app_is_not_a_502() {
    let (mut proxy, _seen, _healthy) = setup(&[]).await;
    let mut bad = 0;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let listen = proxy.listen;
        tasks.push(tokio::spawn(async move {
            let mut bad = 0;
            let mut s = TcpStream::connect(listen).await.unwrap();
            for i in 0..500 {
                let req = format!("GET /close-after/{w}/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() {
                    s = TcpStream::connect(listen).await.unwrap();
                    s.write_all(req.as_bytes()).await.unwrap();
                }
                let resp = read_response(&mut s, WAIT).await.unwrap();
                let text = String::from_utf8_lossy(&resp);
                if !text.starts_with("HTTP/1.1 200") {
                    bad += 1;
                    s = TcpStream::connect(listen).await.unwrap();
                }
            }
            bad
        }));
    }
    for t in tasks {
        bad += t.await.unwrap();
    }
    assert_eq!(
        bad, 0,
        "{bad} of 4000 GETs failed although the app answered every one it read"
    );
    proxy.assert_sound();
}

/// The one retry of a pooled plain request is for a connection the app closed
/// without answering. An answer hyper cannot parse is a broken app, not a race: the
/// request must not be sent twice (the app sees it once, the client gets a 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_answer_is_not_retried() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &[]).await;
    let resp = http_raw(
        proxy.listen,
        b"GET /garbage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&resp), 502, "{resp}");
    let sent = heads
        .all()
        .iter()
        .filter(|h| h.starts_with("get /garbage"))
        .count();
    assert_eq!(sent, 1, "the app got the request {sent} times");
    proxy.assert_sound();
}
