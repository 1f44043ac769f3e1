//! Raw HTTP/1.1 over a socket: a request out as bytes, a response in as text, with no
//! client library in between to tidy up what the proxy sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;

/// Sends raw bytes and reads until the peer closes or a response with its body is in.
pub async fn http_raw(addr: SocketAddr, req: &[u8]) -> std::io::Result<String> {
    let mut s = timeout(WAIT, TcpStream::connect(addr)).await??;
    s.write_all(req).await?;
    let bytes = read_response(&mut s, WAIT).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads one HTTP response (head plus a Content-Length body), or until EOF.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let status_101 = head.starts_with("http/1.1 101");
            if status_101 || len.is_some_and(|n| buf.len() >= end + 4 + n) {
                return Ok(buf);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => return Ok(buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if buf.is_empty() => return Err(e),
            Ok(Err(_)) => return Ok(buf),
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"))
}

/// The upgrade request `path` sends, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}
