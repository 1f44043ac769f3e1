//! The bench's own WebSocket client side: masked frames, the upgrade handshake, a plain
//! echo load, and the readiness probe used before measuring a contender.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frames::{push_header, read_head, unmask};
use super::process::addr;

/// A masked binary client frame carrying `len` payload bytes.
pub fn client_frame(len: usize) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = Vec::with_capacity(len + 14);
    push_header(&mut f, 0x82, len, Some(mask));
    let start = f.len();
    f.extend((0..len).map(|i| (i % 251) as u8));
    unmask(&mut f[start..], mask);
    f
}

/// Length on the wire of the unmasked echo of a `len`-byte message.
pub fn echo_len(len: usize) -> usize {
    let mut v = Vec::new();
    push_header(&mut v, 0x82, len, None);
    v.len() + len
}

/// A masked close frame (client to server) with `code`.
pub fn client_close(code: u16) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut f = Vec::new();
    push_header(&mut f, 0x88, 2, Some(mask));
    let start = f.len();
    f.extend_from_slice(&code.to_be_bytes());
    unmask(&mut f[start..], mask);
    f
}

/// Opens a WebSocket to 127.0.0.1:`port` (client side); returns the socket and any
/// bytes that came after the 101 head.
pub async fn ws_connect(port: u16) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut sock = TcpStream::connect(addr(port)).await?;
    sock.set_nodelay(true)?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await?;
    let (head, rest) = read_head(&mut sock).await?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok((sock, rest))
}

/// A plain echo load without latency bookkeeping (profiling helper): round trips/s.
pub async fn load_for(port: u16, conns: usize, size: usize, dur: Duration) -> (f64, u64) {
    let frame = std::sync::Arc::new(client_frame(size));
    let resp = echo_len(size);
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let Ok((mut s, _)) = ws_connect(port).await else {
                return 0u64;
            };
            let mut buf = vec![0u8; resp];
            let mut n = 0;
            while Instant::now() < end {
                if s.write_all(&frame).await.is_err() || s.read_exact(&mut buf).await.is_err() {
                    break;
                }
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    (total as f64 / dur.as_secs_f64(), total)
}

/// Waits until a WebSocket echo round trip through `port` works.
pub async fn wait_ready(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), probe(port)).await {
            return;
        }
        if Instant::now() > end {
            panic!("{what} on port {port} did not come up within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probe(port: u16) -> std::io::Result<()> {
    let (mut s, _) = ws_connect(port).await?;
    let frame = client_frame(16);
    s.write_all(&frame).await?;
    let mut back = vec![0u8; echo_len(16)];
    s.read_exact(&mut back).await?;
    Ok(())
}
