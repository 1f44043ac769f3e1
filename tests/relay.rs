//! The L7 data path over real sockets: a real tokio-tungstenite app behind a real
//! `wsdrain proxy` process, real clients in front.

mod common;

use std::time::Duration;

use common::{EchoApp, Proxy, http, http_full};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const T: Duration = Duration::from_secs(20);

fn big_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_kind_round_trip_and_are_counted() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let (mut ws, resp) = tokio::time::timeout(
        T,
        tokio_tungstenite::connect_async_with_config(proxy.url("/chat"), Some(big_config()), false),
    )
    .await
    .expect("in time")
    .expect("connect through proxy");
    assert_eq!(resp.status(), 101);

    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("hello")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::binary(vec![0u8, 1, 2, 255])
    );

    // A fragmented text message with a ping between the fragments (RFC 6455 §5.4).
    let frag = |fin: bool, op: OpCode, data: &'static str| {
        let h = FrameHeader {
            is_final: fin,
            opcode: op,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(h, Bytes::from_static(data.as_bytes())))
    };
    ws.send(frag(false, OpCode::Data(Data::Text), "frag-"))
        .await
        .expect("send");
    ws.send(Message::Ping(Bytes::from_static(b"between")))
        .await
        .expect("ping");
    ws.send(frag(true, OpCode::Data(Data::Continue), "mented"))
        .await
        .expect("send");
    let mut got_pong = false;
    loop {
        match ws.next().await.expect("reply").expect("ok") {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"between");
                got_pong = true;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "frag-mented");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_pong, "the app's pong reached the client");

    // A 16 MiB message both ways.
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone()))
        .await
        .expect("send big");
    match tokio::time::timeout(T, ws.next())
        .await
        .expect("in time")
        .expect("reply")
        .expect("ok")
    {
        Message::Binary(b) => assert!(b[..] == big[..], "16 MiB echo is intact"),
        other => panic!("unexpected {other:?}"),
    }

    // Client-initiated close handshake.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            assert_eq!(common::close_code(&frame), Some(1000));
        }
    }
    drop(ws);

    // The metrics equal what was sent: 4 data messages each way (hello, binary,
    // fragmented, big); pings are control frames and not messages.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        proxy
            .metric(r#"websocket_messages_total{direction="client_to_app"}"#)
            .await,
        4.0
    );
    assert_eq!(
        proxy
            .metric(r#"websocket_messages_total{direction="app_to_client"}"#)
            .await,
        4.0
    );
    assert_eq!(proxy.metric("websocket_connections_total").await, 1.0);
    assert_eq!(proxy.metric("websocket_connections_active").await, 0.0);
    assert_eq!(
        proxy
            .metric(r#"websocket_close_total{code="1000",initiator="client"}"#)
            .await,
        1.0
    );
    let c2a = proxy
        .metric(r#"websocket_bytes_total{direction="client_to_app"}"#)
        .await;
    // Masked client frames: payload + header (2..14 bytes) each.
    assert!(
        c2a > (16 << 20) as f64 && c2a < ((16 << 20) + 200) as f64,
        "client bytes {c2a}"
    );
    assert_eq!(app.seen.lock().expect("lock").close_codes, vec![Some(1000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_initiated_close_reaches_the_client() {
    // An app that closes with 4001 right after the handshake.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(s).await.expect("handshake");
        ws.close(Some(CloseFrame {
            code: CloseCode::Library(4001),
            reason: "app says bye".into(),
        }))
        .await
        .expect("close");
        while ws.next().await.is_some() {}
    });
    let proxy = Proxy::start(addr, &[]).await;
    let (mut ws, _) = connect_async(proxy.url("/")).await.expect("connect");
    match tokio::time::timeout(T, ws.next())
        .await
        .expect("in time")
        .expect("msg")
        .expect("ok")
    {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4001);
            assert_eq!(f.reason.as_str(), "app says bye");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        tokio::time::timeout(T, ws.next())
            .await
            .expect("closed in time")
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        proxy
            .metric(r#"websocket_close_total{code="4xxx",initiator="app"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_echo() {
    let app = EchoApp::start().await;
    // The in-process test app shares 2 cores with 1,000 clients: give its accept loop
    // slack, and open the connections 100 handshakes at a time (all stay open together).
    let proxy = Proxy::start(app.addr, &["--connect-timeout", "10s"]).await;
    let handshakes = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let url = proxy.url("/");
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let url = url.clone();
        let handshakes = handshakes.clone();
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("semaphore");
            let (mut ws, _) = connect_async(url).await.expect("connect");
            drop(permit);
            for j in 0..3 {
                let text = format!("{i}-{j}");
                ws.send(Message::text(text.clone())).await.expect("send");
                assert_eq!(
                    ws.next().await.expect("reply").expect("ok"),
                    Message::text(text)
                );
            }
            ws
        }));
    }
    let mut sockets = Vec::new();
    for t in tasks {
        sockets.push(
            tokio::time::timeout(T, t)
                .await
                .expect("in time")
                .expect("task"),
        );
    }
    assert_eq!(
        proxy
            .metric_reaching(
                "websocket_connections_active",
                1000.0,
                Duration::from_secs(5)
            )
            .await,
        1000.0
    );
    assert_eq!(
        proxy
            .metric(r#"websocket_messages_total{direction="client_to_app"}"#)
            .await,
        3000.0
    );
    for mut ws in sockets {
        ws.close(None).await.expect("close");
    }
    let deadline = std::time::Instant::now() + T;
    while proxy.metric("websocket_connections_active").await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections did not all end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_headers_subprotocol_and_forwarded_headers_reach_the_app() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let mut req = proxy
        .url("/room?id=7")
        .into_client_request()
        .expect("request");
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        "chat.v2, chat.v1".parse().expect("hv"),
    );
    h.insert("cookie", "session=abc123".parse().expect("hv"));
    h.insert("authorization", "Bearer token-xyz".parse().expect("hv"));
    h.insert("x-forwarded-for", "203.0.113.9".parse().expect("hv"));
    let (mut ws, resp) = connect_async(req).await.expect("connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat.v2"),
        "the app's subprotocol choice reaches the client"
    );
    ws.close(None).await.expect("close");
    let seen = app.seen.lock().expect("lock");
    let headers = &seen.headers[0];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    assert_eq!(get("cookie"), "session=abc123");
    assert_eq!(get("authorization"), "Bearer token-xyz");
    assert_eq!(get("sec-websocket-protocol"), "chat.v2, chat.v1");
    assert_eq!(get("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(get("x-forwarded-proto"), "http");
    assert_eq!(get("x-forwarded-host"), proxy.listen.to_string());
    assert_eq!(get("host"), proxy.listen.to_string());
}

/// A raw HTTP app that answers every request with `status`.
async fn refusing_app(status: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = format!("app says {status}");
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nX-App: yes\r\nWWW-Authenticate: Bearer\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_101_answers_from_the_app_reach_the_client_as_they_are() {
    for status in ["401 Unauthorized", "404 Not Found"] {
        let app = refusing_app(status).await;
        let proxy = Proxy::start(app, &[]).await;
        match connect_async(proxy.url("/")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_str(), &status[..3]);
                assert_eq!(
                    resp.headers().get("x-app").and_then(|v| v.to_str().ok()),
                    Some("yes")
                );
                let body = resp.body().clone().unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&body), format!("app says {status}"));
            }
            other => panic!("expected HTTP {status}, got {other:?}"),
        }
        assert_eq!(proxy.metric("websocket_connections_total").await, 0.0);
        assert_eq!(
            proxy
                .metric(r#"wsdrain_upgrades_rejected_total{reason="app"}"#)
                .await,
            1.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_502_with_a_reason() {
    let closed = common::free_addr();
    let proxy = Proxy::start(closed, &[]).await;
    match connect_async(proxy.url("/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 502);
            let body =
                String::from_utf8_lossy(&resp.body().clone().unwrap_or_default()).to_string();
            assert!(body.contains("unreachable"), "body says why: {body}");
        }
        other => panic!("expected 502, got {other:?}"),
    }
    let (status, body) = http(proxy.listen, "GET", "/plain", &[], b"")
        .await
        .expect("http");
    assert_eq!(status, 502, "plain HTTP too: {body}");
    let (status, body) = http(proxy.admin, "GET", "/readyz", &[], b"")
        .await
        .expect("readyz");
    assert_eq!(status, 503, "not ready while the app is down: {body}");
    assert!(
        proxy
            .metric(r#"wsdrain_upgrades_rejected_total{reason="upstream_unavailable"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_gets_503_with_retry_after() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--max-connections", "2"]).await;
    let (_a, _) = connect_async(proxy.url("/")).await.expect("first");
    let (_b, _) = connect_async(proxy.url("/")).await.expect("second");
    match connect_async(proxy.url("/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(
        proxy
            .metric(r#"wsdrain_upgrades_rejected_total{reason="max_connections"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.seen.lock().expect("lock").headers.len(),
        2,
        "the app never saw the third"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_cut_after_the_handshake_timeout() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--handshake-timeout", "1s"]).await;
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the proxy closed the connection in time");
    let waited = started.elapsed();
    assert!(n.is_ok() || n.is_err());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_gets_431() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--max-header-size", "8KiB"]).await;
    let big = "a".repeat(10_000);
    let (status, _) = http(proxy.listen, "GET", "/", &[("X-Big", &big)], b"")
        .await
        .expect("http");
    assert_eq!(status, 431);
}

/// A hyper app for plain HTTP: echoes POST bodies, answers GETs with a fixed body.
async fn http_app() -> std::net::SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = if req.method() == hyper::Method::POST {
                        req.into_body().collect().await?.to_bytes()
                    } else {
                        bytes::Bytes::from(format!("GET ok, xff={xff}"))
                    };
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_reverse_proxied_with_bodies_streamed() {
    let app = http_app().await;
    let proxy = Proxy::start(app, &[]).await;
    let (status, body) = http(proxy.listen, "GET", "/x", &[], b"")
        .await
        .expect("get");
    assert_eq!((status, body.as_str()), (200, "GET ok, xff=127.0.0.1"));
    // 8 MiB body up and back, sent chunked so it streams.
    let payload: Vec<u8> = (0..8 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    for chunk in payload.chunks(1 << 20) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("size");
        s.write_all(chunk).await.expect("chunk");
        s.write_all(b"\r\n").await.expect("crlf");
    }
    s.write_all(b"0\r\n\r\n").await.expect("end");
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    let (head, _) = text.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(out.len() > payload.len(), "the whole body came back");
    assert!(
        out.windows(64).any(|w| w == &payload[payload.len() - 64..]),
        "the end of the body came back"
    );
    // Keep-alive: two requests on one connection.
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    for _ in 0..2 {
        s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // One whole response (head and body may arrive in separate reads).
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(T, s.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
                    break;
                }
            }
        }
    }
    let _ = http_full;
}
