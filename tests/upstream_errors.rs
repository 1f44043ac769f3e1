//! Why a connection to the app failed is counted by its cause: refused
//! (`upstream_connect`) apart from not accepted in time (`upstream_connect_timeout`),
//! in both front ends.

mod common;
mod hostile_support;

use std::net::SocketAddr;
use std::time::Duration;

use hostile_support::*;
use tokio::net::TcpStream;

/// A listener whose accept queue is full and never drained: a new connection's SYN is
/// dropped, so connecting to it times out (no RST, unlike a closed port). Returns the
/// address and what keeps the queue full.
async fn full_backlog() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    sock.listen(0).expect("listen");
    let addr = sock.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    (addr, sock, fillers)
}

/// A free port with nothing listening: connecting is refused at once.
fn closed_port() -> SocketAddr {
    common::free_addr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_and_a_timed_out_app_connection_are_told_apart() {
    for mode in ["http", "tcp"] {
        let (slow, _sock, _fillers) = full_backlog().await;
        for (upstream, kind) in [
            (closed_port(), "upstream_connect"),
            (slow, "upstream_connect_timeout"),
        ] {
            let mut proxy =
                Proxy::start(upstream, &["--mode", mode, "--connect-timeout", "500ms"]).await;
            if mode == "http" {
                let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
                tokio::io::AsyncWriteExt::write_all(
                    &mut s,
                    format!(
                        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .expect("upgrade");
                let resp = read_response(&mut s, WAIT).await.expect("answer");
                let text = String::from_utf8_lossy(&resp).into_owned();
                assert!(text.starts_with("HTTP/1.1 502"), "{mode} {kind}: {text}");
            } else {
                let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
                assert!(
                    closed_within(&mut s, WAIT).await,
                    "{mode} {kind}: not closed"
                );
            }
            let deadline = std::time::Instant::now() + WAIT;
            while proxy.errors(kind).await == 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(proxy.errors(kind).await, 1, "{mode}: {kind}");
            let other = if kind == "upstream_connect" {
                "upstream_connect_timeout"
            } else {
                "upstream_connect"
            };
            assert_eq!(
                proxy.errors(other).await,
                0,
                "{mode}: {kind} counted as {other}"
            );
            proxy.assert_sound();
        }
    }
}
