//! What the app is sent on the upgrade path, read off an app that records every request
//! head: every `X-Forwarded-For` line in order, an origin-form target without hop-by-hop
//! headers, only `websocket` offered, and a 101 that is not WebSocket refused rather
//! than framed.

mod common;
mod hostile_support;

use hostile_support::capture_app::*;
use hostile_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every `X-Forwarded-For` line reaches the app, in order, with the peer
/// appended, on both paths. HAProxy's `option forwardfor` adds its own line after the
/// client's; keeping only the first line would let a client replace the real address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_keeps_every_line_in_order() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &[]).await;
    let two_lines = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.1.2.3, 10.9.9.9\r\n";
    // Plain path.
    let resp = http_raw(
        proxy.listen,
        format!("GET /plain HTTP/1.1\r\nHost: x\r\n{two_lines}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status(&resp), 200, "{resp}");
    // Upgrade path.
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(upgrade_request("/ws", two_lines).as_bytes())
        .await
        .unwrap();
    let head = read_head_only(&mut s, WAIT).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let want = vec!["6.6.6.6, 10.1.2.3, 10.9.9.9, 127.0.0.1".to_string()];
    assert_eq!(heads.header(0, "x-forwarded-for"), want, "plain path");
    assert_eq!(heads.header(1, "x-forwarded-for"), want, "upgrade path");
    proxy.assert_sound();
}

/// The upgrade path forwards in origin form (Host from an absolute-form target,
/// RFC 9112 §3.2.2) and removes hop-by-hop headers, including those `Connection`
/// names, except the `Connection: Upgrade` / `Upgrade: websocket` pair the upgrade
/// itself needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_path_is_origin_form_without_hop_by_hop() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &[]).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let req = format!(
        "GET http://other-host:8080/ws?room=1 HTTP/1.1\r\nHost: test\r\n\
         Connection: Upgrade, X-Hop-Secret\r\nX-Hop-Secret: s3cret\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nProxy-Authorization: Basic eDp5\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nX-End-To-End: kept\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head_only(&mut s, WAIT).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_roundtrip(&mut s, "through").await;
    assert_eq!(heads.request_line(0), "get /ws?room=1 http/1.1");
    assert_eq!(heads.header(0, "host"), vec!["other-host:8080"]);
    for gone in ["x-hop-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            heads.header(0, gone).is_empty(),
            "{gone} reached the app: {}",
            heads.all()[0]
        );
    }
    assert_eq!(heads.header(0, "connection"), vec!["upgrade"]);
    assert_eq!(heads.header(0, "upgrade"), vec!["websocket"]);
    assert_eq!(heads.header(0, "x-end-to-end"), vec!["kept"]);
    assert_eq!(
        heads.header(0, "sec-websocket-key"),
        vec![KEY.to_ascii_lowercase()]
    );
    proxy.assert_sound();
}

/// The request side: `Upgrade: h2c, websocket` is a WebSocket request (RFC 6455
/// §4.2.1 asks only that the header contain `websocket`), and the app is offered
/// `websocket` alone, so it cannot pick another protocol that wsdrain would then frame.
/// An upgrade that does not offer `websocket` at all takes the plain path, where
/// `Upgrade` is hop-by-hop and removed (RFC 9110 §7.8 lets a server ignore it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_is_offered_to_the_app() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &[]).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head_only(&mut s, WAIT).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        heads.header(0, "upgrade"),
        vec!["websocket"],
        "{}",
        heads.all()[0]
    );
    // h2c alone: a plain request for the app, no Upgrade header, a normal answer.
    let resp = http_raw(
        proxy.listen,
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(heads.header(1, "upgrade").is_empty(), "{}", heads.all()[1]);
    assert!(heads.header(1, "http2-settings").is_empty());
    proxy.assert_sound();
}

/// The answer side: a 101 that does not switch to `websocket` (another
/// protocol, or no `Upgrade` header at all) is never relayed as WebSocket: the client
/// gets a 502, nothing is registered as a connection, and so nothing can later be
/// parsed as frames or get a close frame injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_websocket_101_is_refused_not_framed() {
    let (app, _heads) = start_capture_app().await;
    let mut proxy = Proxy::start(app, &[]).await;
    let before = proxy.errors("upstream_handshake").await;
    for path in ["/h2c-101", "/bare-101"] {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        s.write_all(upgrade_request(path, "").as_bytes())
            .await
            .unwrap();
        let head = read_head_only(&mut s, WAIT).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 502"), "{path}: {head}");
    }
    assert_eq!(proxy.metric("websocket_connections_active").await, 0);
    assert_eq!(proxy.metric("websocket_connections_total").await, 0);
    assert_eq!(proxy.errors("upstream_handshake").await, before + 2);
    // A real WebSocket still works.
    let mut ok = raw_ws(proxy.listen, "/ws").await;
    echo_roundtrip(&mut ok, "still websocket").await;
    proxy.assert_sound();
}
