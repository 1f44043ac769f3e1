//! Hostile frames after the upgrade, over real sockets: declared lengths and messages
//! over the limit, protocol violations, frames glued to the handshake, large fragmented
//! messages byte for byte, oversized control frames, and how each is counted. Each test
//! runs a real `wsdrain proxy` in front of a strict hand-written app and asserts what
//! both sides get and that the proxy neither died nor panicked.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A frame declaring a huge length, with --max-message-size: the client gets close 1009,
/// the app a masked close 1001, the error is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_length_gets_1009() {
    let (mut proxy, _seen, mut healthy) = setup(&["--max-message-size", "64KiB"]).await;
    let before = proxy.errors("message_too_big").await;
    let mut s = raw_ws(proxy.listen, "/echo").await;
    echo_roundtrip(&mut s, "ok first").await;
    let mut hdr = vec![0x82, 0xff];
    hdr.extend_from_slice(&(1u64 << 62).to_be_bytes());
    hdr.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&hdr).await.unwrap();
    s.write_all(&[0u8; 4096]).await.unwrap();
    let close = read_until_close(&mut s, WAIT)
        .await
        .expect("no close frame");
    assert_eq!(close.close_code(), Some(1009));
    assert!(!close.masked);
    assert_eq!(proxy.errors("message_too_big").await, before + 1);
    // The client's close reply is taken for payload of the huge frame it announced, so
    // the relay only ends at --close-timeout (5 s by default), counted as close_timeout.
    let t = Instant::now();
    assert!(answer_close(&mut s, 1009, WAIT).await, "not closed");
    proxy.wait_active(1).await;
    assert!(t.elapsed() < WAIT);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A message over the limit built from many small fragments is caught too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_message_over_limit_gets_1009() {
    let (mut proxy, _seen, mut healthy) = setup(&["--max-message-size", "64KiB"]).await;
    let mut s = raw_ws(proxy.listen, "/sink").await;
    let chunk = vec![7u8; 8 * 1024];
    s.write_all(&frame(false, 2, &chunk, MASK)).await.unwrap();
    for _ in 0..9 {
        if s.write_all(&frame(false, 0, &chunk, MASK)).await.is_err() {
            break;
        }
    }
    let close = read_until_close(&mut s, WAIT)
        .await
        .expect("no close frame");
    assert_eq!(close.close_code(), Some(1009));
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Protocol violations after the upgrade pass through: the app's verdict (1002) reaches
/// the client unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_reach_the_app() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked client frame", frame(true, 1, b"naked", None)),
        ("reserved data opcode", frame(true, 3, b"three", MASK)),
        ("reserved control opcode", frame(true, 0xb, b"eleven", MASK)),
        (
            "invalid close code 1005",
            frame(true, 8, &1005u16.to_be_bytes(), MASK),
        ),
        (
            "invalid close code 999",
            frame(true, 8, &999u16.to_be_bytes(), MASK),
        ),
        ("one-byte close payload", frame(true, 8, &[3], MASK)),
        ("oversized ping", frame(true, 9, &[0u8; 200], MASK)),
    ];
    let before = proxy.errors("protocol_violation").await;
    let n = cases.len() as u64;
    for (what, bytes) in cases {
        let mut s = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut s, "fine so far").await;
        s.write_all(&bytes).await.unwrap();
        let close = read_until_close(&mut s, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(close.close_code(), Some(1002), "{what}");
        // The client answers the close; the connection ends.
        assert!(answer_close(&mut s, 1002, WAIT).await, "{what}: not closed");
    }
    proxy.wait_active(1).await;
    // Close 1005/999 and a one-byte close payload are not visible in a header; the
    // unmasked frame, both reserved opcodes and the oversized ping are.
    let counted = proxy.errors("protocol_violation").await - before;
    assert!((4..=n).contains(&counted), "{counted} violations counted");
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// Bytes that arrive together with the handshake, in both directions: a client frame in
/// the same write as the upgrade request, an app greeting in the same write as the 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_glued_to_the_handshake_are_relayed() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut req = format!(
        "GET /greet HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
    .into_bytes();
    req.extend(client_text("early bird"));
    s.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        timeout(WAIT, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let greeting = timeout(WAIT, read_frame(&mut s)).await.unwrap().unwrap();
    assert_eq!(greeting.payload, b"welcome");
    let echo = timeout(WAIT, read_frame(&mut s)).await.unwrap().unwrap();
    assert_eq!(echo.payload, b"early bird");
    echo_roundtrip(&mut s, "and after").await;
    // More read-ahead than half a relay buffer: a 12 KiB message glued to the request.
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut req = format!(
        "GET /echo HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
    .into_bytes();
    let big: String = (0..12 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    req.extend(client_text(&big));
    req.extend(client_text("second"));
    s.write_all(&req).await.unwrap();
    let head = read_response(&mut s, WAIT).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let end = find(&head, b"\r\n\r\n").unwrap() + 4;
    let mut r = AsyncReadExt::chain(std::io::Cursor::new(head[end..].to_vec()), &mut s);
    let first = timeout(WAIT, read_frame(&mut r)).await.unwrap().unwrap();
    assert!(
        first.payload == big.as_bytes(),
        "big glued message corrupted"
    );
    let second = timeout(WAIT, read_frame(&mut r)).await.unwrap().unwrap();
    assert_eq!(second.payload, b"second");
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A large fragmented message with pings between the fragments arrives byte-exact, and
/// the messages counter moves by one per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fragmented_message_is_byte_exact() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let before = proxy
        .metric("websocket_messages_total{direction=\"client_to_app\"}")
        .await;
    let mut s = raw_ws(proxy.listen, "/echo").await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (rd, mut wr) = s.split();
    let parts: Vec<&[u8]> = data.chunks(700_001).collect();
    let writer = async {
        for (i, p) in parts.iter().enumerate() {
            let op = if i == 0 { 2 } else { 0 };
            wr.write_all(&frame(i + 1 == parts.len(), op, p, MASK))
                .await
                .unwrap();
            if i + 1 < parts.len() {
                wr.write_all(&frame(true, 9, b"between", MASK))
                    .await
                    .unwrap();
            }
        }
    };
    let reader = async {
        let mut rd = rd;
        let mut got = Vec::new();
        let mut pongs = 0;
        while got.len() < data.len() {
            let f = timeout(WAIT, read_frame(&mut rd)).await.unwrap().unwrap();
            match f.opcode {
                10 => pongs += 1,
                0 | 2 => got.extend_from_slice(&f.payload),
                op => panic!("unexpected opcode {op}"),
            }
        }
        (got, pongs)
    };
    let ((), (got, pongs)) = tokio::join!(writer, reader);
    assert!(got == data, "payload corrupted");
    assert_eq!(pongs, parts.len() - 1);
    let after = proxy
        .metric("websocket_messages_total{direction=\"client_to_app\"}")
        .await;
    assert_eq!(after, before + 1);
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// The app sends a message over --max-message-size: the client gets a close (1001, the
/// app misbehaved, not the client), the app gets 1009, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_message_over_limit_is_stopped() {
    let (mut proxy, _seen, mut healthy) = setup(&["--max-message-size", "64KiB"]).await;
    let before = proxy.errors("message_too_big").await;
    let mut s = raw_ws(proxy.listen, "/big-out").await;
    let close = read_until_close(&mut s, WAIT)
        .await
        .expect("no close frame");
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(proxy.errors("message_too_big").await, before + 1);
    assert!(answer_close(&mut s, 1001, WAIT).await);
    proxy.wait_active(1).await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A control frame declaring more than 125 bytes is invalid and is relayed as opaque
/// bytes for the peer to judge; --max-message-size still applies to it, or a "ping" of
/// 1 MiB would reach an app that does not judge frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_control_frame_respects_the_limit() {
    let (mut proxy, _seen, _healthy) = setup(&["--max-message-size", "64KiB"]).await;
    let mut s = raw_ws(proxy.listen, "/sink").await;
    let payload = vec![0u8; 1 << 20];
    let (mut rd, mut wr) = s.split();
    let f = frame(true, 9, &payload, MASK);
    let writer = async {
        let _ = timeout(Duration::from_secs(3), wr.write_all(&f)).await;
    };
    let ((), close) = tokio::join!(writer, read_until_close(&mut rd, Duration::from_secs(5)));
    assert_eq!(
        close.and_then(|c| c.close_code()),
        Some(1009),
        "a 1 MiB ping passed --max-message-size 64KiB"
    );
    proxy.assert_sound();
}

/// Protocol violations after the upgrade pass through for the app to judge (see
/// protocol_violations_reach_the_app) and are counted as protocol_violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_counted() {
    let (mut proxy, _seen, _healthy) = setup(&[]).await;
    let before = all_errors(&proxy).await;
    for bytes in [
        frame(true, 1, b"naked", None),
        frame(true, 3, b"three", MASK),
    ] {
        let mut s = raw_ws(proxy.listen, "/echo").await;
        s.write_all(&bytes).await.unwrap();
        let _ = read_until_close(&mut s, WAIT).await;
        let _ = answer_close(&mut s, 1002, WAIT).await;
    }
    let after = all_errors(&proxy).await;
    assert!(after >= before + 2, "errors went from {before} to {after}");
    assert_eq!(proxy.errors("protocol_violation").await, 2);
    proxy.assert_sound();
}
