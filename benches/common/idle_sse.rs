//! Idle Server-Sent Events streams through wsdrain, for the idle-memory table: what an
//! `EventSource` that waits for its next event costs the proxy, beside an idle
//! WebSocket. The app runs inside the bench process (only wsdrain's RSS is measured):
//! each request gets an event-stream head and one event, then nothing until the client
//! leaves.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Proc;

/// Starts the event-stream app on a loopback port and returns the port.
pub async fn start_sse_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the SSE app");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 2048];
                let _ = s.read(&mut head).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ndata: hello!!!\n\n\r\n",
                    )
                    .await;
                // Held until the client (through wsdrain) goes away.
                let _ = s.read(&mut head).await;
            });
        }
    });
    port
}

/// One EventSource-like stream through `port` (the request every `EventSource` sends),
/// returned once its first event has arrived.
async fn open_stream(port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
    )
    .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(5).any(|w| w == b"hello") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "the stream ended before its first event",
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(s)
}

/// Opens `n` idle SSE streams through `port` and returns the RSS growth per stream
/// (bytes) of `proc`, with its RSS before and after (KiB), as `idle_rss` does for
/// WebSockets.
pub async fn idle_sse_rss(port: u16, proc: &Proc, n: usize) -> (f64, u64, u64) {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < end, "wsdrain did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..4 {
        drop(open_stream(port).await.expect("warm-up stream"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc.rss_kib();
    let mut streams = Vec::with_capacity(n);
    let ports = vec![port; n];
    for chunk in ports.chunks(200) {
        let opened = futures_util::future::join_all(chunk.iter().map(|&p| open_stream(p))).await;
        for s in opened {
            streams.push(s.expect("idle stream"));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = proc.rss_kib();
    drop(streams);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    (per, before, after)
}
