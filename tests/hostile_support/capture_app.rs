//! An app that records every request head it gets and answers by path, including 101s
//! that are not WebSocket: what the header-rewriting tests read to see exactly what
//! wsdrain sent the app.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::find;

/// Every request head the capture app received, lower-cased, in order.
#[derive(Default, Clone)]
pub struct Heads(pub Arc<Mutex<Vec<String>>>);

impl Heads {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The header lines named `name` (lower case) of head number `i`.
    pub fn header(&self, i: usize, name: &str) -> Vec<String> {
        let heads = self.all();
        let Some(head) = heads.get(i) else {
            return Vec::new();
        };
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn request_line(&self, i: usize) -> String {
        self.all()
            .get(i)
            .and_then(|h| h.split("\r\n").next())
            .unwrap_or("")
            .to_string()
    }
}

/// The capture app. Answers by path: `/h2c-101` switches to `h2c` (101 with
/// `Upgrade: h2c`) and then writes bytes that look like a WebSocket close frame;
/// `/bare-101` answers 101 with no `Upgrade` header; `/garbage` answers a response
/// hyper cannot parse; any other upgrade gets a proper WebSocket 101 and then every byte
/// echoed; any other request gets `200 ok`.
pub async fn start_capture_app() -> (SocketAddr, Heads) {
    let heads = Heads::default();
    (super::serve_each(heads.clone(), capture_conn).await, heads)
}

async fn capture_conn(mut s: TcpStream, heads: Heads) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
        buf.drain(..end + 4);
        heads.0.lock().unwrap().push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let key = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("sec-websocket-key:"))
            .map(|k| k.trim().to_string());
        let is_upgrade = head.contains("\r\nupgrade:");
        if path.starts_with("/h2c-101") {
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            )
            .await?;
            // An h2c-ish preface, then bytes a frame parser would read as a close.
            s.write_all(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x88\x02\x03\xe8")
                .await?;
            let _ = s.read(&mut chunk).await;
            return Ok(());
        }
        if path.starts_with("/bare-101") {
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")
                .await?;
            let _ = s.read(&mut chunk).await;
            return Ok(());
        }
        if path.starts_with("/garbage") {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nok")
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        if is_upgrade && let Some(key) = key {
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            s.write_all(resp.as_bytes()).await?;
            return super::strict_echo(s, buf).await;
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            .await?;
    }
}

/// Reads one response head (up to the blank line) byte by byte, so nothing after it is
/// consumed; `None` when the connection ends first or `limit` passes.
pub async fn read_head_only(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
