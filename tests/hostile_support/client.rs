//! Raw WebSocket clients through the proxy, and the healthy connection every hostile
//! test opens first and checks last.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

/// A raw client: sends an upgrade for `path` and checks for the 101.
pub async fn raw_ws(proxy: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Byte by byte, so frames that follow the 101 at once stay in the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!(
                "no 101 head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 101"), "no 101: {text}");
    s
}

/// Sends a text message over a raw client and expects it echoed.
pub async fn echo_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, text: &str) {
    s.write_all(&client_text(text)).await.unwrap();
    let f = timeout(WAIT, read_frame(s))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(f.opcode, 1);
    assert!(!f.masked, "server frames are not masked");
    assert_eq!(f.payload, text.as_bytes());
}

/// A healthy connection through the proxy: opened before the hostile part of a test,
/// checked after it (and a fresh one too).
pub struct Healthy {
    pub s: TcpStream,
}

impl Healthy {
    pub async fn open(proxy: &Proxy) -> Healthy {
        let mut s = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut s, "hello before").await;
        Healthy { s }
    }

    /// The old connection still echoes, and a new one can be opened and echoes.
    pub async fn check(&mut self, proxy: &Proxy) {
        echo_roundtrip(&mut self.s, "still alive").await;
        let mut fresh = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut fresh, "fresh one").await;
        let _ = fresh
            .write_all(&frame(true, 8, &1000u16.to_be_bytes(), Some([1, 2, 3, 4])))
            .await;
    }
}

pub async fn setup(extra: &[&str]) -> (Proxy, Seen, Healthy) {
    let (app, seen) = start_app().await;
    let proxy = Proxy::start(app, extra).await;
    let healthy = Healthy::open(&proxy).await;
    (proxy, seen, healthy)
}
