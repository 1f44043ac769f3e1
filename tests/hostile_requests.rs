//! Hostile requests before the upgrade, over real sockets: smuggling shapes, oversized
//! and malformed heads, slow heads, invalid handshakes, PROXY v2 headers as the clouds
//! send them, and an admin port with an empty token file. Each test runs a real `wsdrain
//! proxy` in front of a strict hand-written app and asserts the answer the hostile party
//! gets, that a healthy connection opened beforehand keeps working, that
//! `websocket_errors_total{kind}` moves where it should, and that the proxy neither died
//! nor panicked. Each test is bounded in time.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::capture_app::*;
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Request-smuggling shapes that must be refused with a 4xx and must never reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let (mut proxy, seen, mut healthy) = setup(&[]).await;
    let shapes: &[(&str, &str)] = &[
        (
            "two different Content-Length",
            "POST /cl-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "Content-Length list",
            "POST /cl-list HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "signed Content-Length",
            "POST /cl-sign HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        ),
        (
            "chunked not last",
            "POST /te-notlast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "unknown transfer coding",
            "POST /te-x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "space before colon",
            "POST /te-space HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST /te-10 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obsolete line folding",
            "POST /fold HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n chunked\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "bad chunk size",
            "POST /chunk-bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    let before = proxy.errors("bad_request").await;
    for (what, req) in shapes {
        let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
        // "bad chunk size" is only seen once the body is read, by which time the app
        // may have the head; the others must never reach it.
        if *what == "bad chunk size" {
            assert!(
                resp.is_empty() || status(&resp) >= 400,
                "{what}: got {resp:?}"
            );
            continue;
        }
        let code = status(&resp);
        assert!((400..500).contains(&code), "{what}: got {resp:?}");
    }
    let lines = seen.lines();
    for path in [
        "/cl-cl",
        "/cl-list",
        "/cl-sign",
        "/te-notlast",
        "/te-x",
        "/te-space",
        "/te-10",
        "/fold",
    ] {
        assert!(
            !lines.iter().any(|l| l.contains(path)),
            "{path} reached the app: {lines:?}"
        );
    }
    assert!(proxy.errors("bad_request").await >= before + 8);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// The classic CL.TE smuggle: Transfer-Encoding wins (RFC 9112 §6.3), Content-Length is
/// removed before forwarding, the client connection is closed after the answer, and the
/// request hidden in the body never reaches the app as a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_smuggle_does_not_desync() {
    let (mut proxy, seen, mut healthy) = setup(&[]).await;
    let req = "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
               0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let resp = read_response(&mut s, WAIT).await.unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    // Whatever the status, the connection must end there: no second answer.
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "connection kept open after a CL+TE request"
    );
    // And the pooled connection to the app is not poisoned: a TE.CL shape next.
    let req2 = "POST /front2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                5\r\nGET /\r\n0\r\n\r\n";
    let _ = http_raw(proxy.listen, req2.as_bytes()).await.unwrap();
    for _ in 0..3 {
        let r = http_raw(proxy.listen, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(r.contains("seen GET /after"), "desynced answer: {r:?}");
    }
    let lines = seen.lines();
    assert!(
        !lines.iter().any(|l| l.contains("/smuggled")),
        "smuggled request reached the app: {lines:?} (first answer {resp:?})"
    );
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Conflicting Content-Length and Transfer-Encoding (the classic smuggling shape). RFC
/// 9112 §6.3 lets a server either refuse it or process it by Transfer-Encoding alone and
/// close the connection after answering. hyper does the latter before wsdrain sees the
/// request, so what matters is that nothing can be smuggled: the chunked body ends the
/// request, the bytes a Content-Length reader would take for a second request never
/// reach the app as one, and the client's connection is closed after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_conflict_cannot_smuggle_a_second_request() {
    let (mut proxy, seen, _healthy) = setup(&[]).await;
    // Read by Content-Length (5 bytes: "0\r\n\r\n" is 5), the rest would be a second
    // request "GET /smuggled"; read by Transfer-Encoding it is the chunked terminator
    // followed by garbage on a connection that must be closed.
    let req = "POST /clte HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    timeout(WAIT, s.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "processed by Transfer-Encoding: {text:.200}"
    );
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the connection closed: {text:.400}"
    );
    let lines = seen.lines();
    assert_eq!(lines.iter().filter(|l| l.contains("/clte")).count(), 1);
    assert!(!lines.iter().any(|l| l.contains("/smuggled")), "{lines:?}");
    proxy.assert_sound();
}

/// A request head over --max-header-size gets 431, on both request paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_gets_431() {
    let (mut proxy, seen, mut healthy) = setup(&["--max-header-size", "16KiB"]).await;
    let before = proxy.errors("header_too_large").await;
    let big = "a".repeat(20 * 1024);
    for req in [
        format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
        format!(
            "GET /big-ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nCookie: {big}\r\n\r\n"
        ),
        // Many small headers adding up.
        format!(
            "GET /many HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..2000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        ),
    ] {
        let resp = http_raw(proxy.listen, req.as_bytes()).await.unwrap();
        assert_eq!(status(&resp), 431, "got {resp:.200}");
    }
    // Just under the limit still works.
    let ok = format!(
        "GET /fits HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(12 * 1024)
    );
    let resp = http_raw(proxy.listen, ok.as_bytes()).await.unwrap();
    assert_eq!(status(&resp), 200, "got {resp:.200}");
    assert!(!seen.lines().iter().any(|l| l.contains("/big")));
    assert_eq!(proxy.errors("header_too_large").await, before + 3);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Malformed request lines get 400 (or 505 for an unknown version) and never reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_gets_400() {
    let (mut proxy, seen, mut healthy) = setup(&[]).await;
    let before = proxy.errors("bad_request").await;
    let bad: [&[u8]; 8] = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nul\0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        // A TLS ClientHello on the plain-text port.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ];
    for req in bad {
        let resp = http_raw(proxy.listen, req).await.unwrap();
        assert_eq!(status(&resp), 400, "{req:?} got {resp:?}");
    }
    let resp = http_raw(proxy.listen, b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(status(&resp), 400 | 505), "got {resp:?}");
    assert!(
        seen.lines().len() <= 2,
        "malformed requests reached the app: {:?}",
        seen.lines()
    );
    assert!(proxy.errors("bad_request").await >= before + 8);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Slowloris: a head trickled one byte at a time is cut at --handshake-timeout, and so is
/// a connection that sends nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_handshake_timeout() {
    let (mut proxy, _seen, mut healthy) = setup(&["--handshake-timeout", "1s"]).await;
    let before = proxy.errors("header_timeout").await;
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut cut = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X").await.is_err() {
            cut = true;
            break;
        }
        let mut b = [0u8; 512];
        if let Ok(r) = timeout(Duration::from_millis(1), s.read(&mut b)).await {
            match r {
                Ok(0) | Err(_) => {
                    cut = true;
                    break;
                }
                Ok(_) => {} // a 408 is fine; keep reading for the close
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(cut, "slowloris connection still open after {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(3500),
        "cut only after {elapsed:?}"
    );
    // Nothing sent at all.
    let mut idle = TcpStream::connect(proxy.listen).await.unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)).await,
        "a connection that never sends a byte is held open"
    );
    assert!(proxy.errors("header_timeout").await > before);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Invalid WebSocket handshakes are the app's to judge: its answer reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ws_handshake_gets_the_apps_answer() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let bad_version = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let resp = http_raw(proxy.listen, bad_version.as_bytes())
        .await
        .unwrap();
    assert_eq!(status(&resp), 426, "got {resp:?}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{resp:?}"
    );
    let missing_key = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n";
    let resp = http_raw(proxy.listen, missing_key.as_bytes())
        .await
        .unwrap();
    assert_eq!(status(&resp), 400, "got {resp:?}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-app-verdict: missing-key"),
        "{resp:?}"
    );
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Hostile requests before the upgrade are counted: hyper answers 400/431 and cuts
/// slow heads itself, and wsdrain counts each as bad_request, header_too_large,
/// header_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rejections_are_counted() {
    let (mut proxy, _seen, _healthy) = setup(&["--handshake-timeout", "1s"]).await;
    let before = all_errors(&proxy).await;
    let kinds = ["bad_request", "header_too_large", "header_timeout"];
    let mut each = Vec::new();
    for k in kinds {
        each.push(proxy.errors(k).await);
    }
    let _ = http_raw(proxy.listen, b"GARBAGE\r\n\r\n").await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = http_raw(proxy.listen, big.as_bytes()).await.unwrap();
    let mut slow = TcpStream::connect(proxy.listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await);
    // The count may trail the client's EOF by a moment: on a loaded machine the first
    // read once saw 2 of the 3.
    let deadline = Instant::now() + WAIT;
    let mut after = all_errors(&proxy).await;
    while after < before + 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = all_errors(&proxy).await;
    }
    assert_eq!(after, before + 3, "errors went from {before} to {after}");
    for (k, b) in kinds.iter().zip(each) {
        assert_eq!(proxy.errors(k).await, b + 1, "{k}");
    }
    proxy.assert_sound();
}

/// V2 headers with TLVs as AWS NLB (0xEA, VPC endpoint id) and GCP (0xE0, PSC
/// connection id) send them, plus a CRC32C and padding, over a real socket; the bytes
/// after the header reach the app untouched. A truncated v2 header is refused without
/// harm to the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_with_cloud_tlvs_is_accepted() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &["--accept-proxy-protocol"]).await;
    let mut tlvs = Vec::new();
    let vpce = b"\x01vpce-0123456789abcdef0";
    tlvs.extend_from_slice(&[0xEA, 0, vpce.len() as u8]);
    tlvs.extend_from_slice(vpce);
    tlvs.extend_from_slice(&[0xE0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    tlvs.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]); // CRC32C (not checked)
    tlvs.extend_from_slice(&[0x04, 0x02, 0x00]); // NOOP padding, 512 bytes
    tlvs.extend_from_slice(&[0u8; 512]);
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[198, 51, 100, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80]);
    h.extend_from_slice(&tlvs);
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(&h).await.unwrap();
    s.write_all(b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s, WAIT).await.unwrap();
    assert!(
        String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(heads.header(0, "x-forwarded-for"), vec!["198.51.100.7"]);
    // 13 bytes of a v2 header, then the end: refused, process fine.
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21").await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed_within(&mut s, WAIT).await);
    proxy.assert_sound();
}

/// An empty admin token file refuses every state-changing request (503), but
/// says so in the log once, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_token_file_warns_once() {
    let dir = std::env::temp_dir().join(format!("wsdrain-hostile-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "").unwrap();
    let (app, _seen) = start_app().await;
    let mut proxy = Proxy::start(app, &["--admin-token-file", token.to_str().unwrap()]).await;
    for _ in 0..200 {
        let resp = http_raw(
            proxy.admin,
            b"POST /shed?count=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(status(&resp), 503, "{resp}");
    }
    let warnings = proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("admin token file"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for 200 requests with an empty token file"
    );
    // A token written later works without a restart, and a wrong one is still refused.
    std::fs::write(&token, "s3cret\n").unwrap();
    let ok = http_raw(
        proxy.admin,
        b"POST /shed?count=0 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&ok), 202, "{ok}");
    let wrong = http_raw(
        proxy.admin,
        b"POST /shed?count=0 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&wrong), 401, "{wrong}");
    let _ = std::fs::remove_dir_all(&dir);
    proxy.assert_sound();
}
