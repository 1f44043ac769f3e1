//! The echo app: a minimal, allocation-light WebSocket echo server, run as a child
//! process of the bench binary (`<bench> __echo-app PORT`). A WebSocket opened on
//! `/push?...` is served by the push scenario's sender instead (`push.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::frames::{header_value, parse_frame, push_header, read_head, unmask};
use super::process::addr;
use super::push::{PushParams, push_conn};

/// The echo app on 127.0.0.1:`port`, the app behind every contender.
pub async fn echo_app(port: u16) {
    echo_app_at(addr(port), None).await
}

/// Data messages whose payload starts with this tag are counted by an app started with
/// a counter, so a bench can tell how many of its clients' messages the apps received
/// (probes and other traffic do not carry it).
pub const COUNTED_TAG: &[u8; 4] = b"RSEQ";

/// The echo app on any address (the rollout bench gives each pod its own loopback
/// address); with `received`, it counts the tagged data messages it read.
pub async fn echo_app_at(at: SocketAddr, received: Option<Arc<AtomicU64>>) {
    let listener = TcpListener::bind(at).await.expect("bind echo app");
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let _ = echo_conn(sock, received).await;
        });
    }
}

/// Answers a WebSocket upgrade on `sock` (server side). Returns bytes read past the head.
pub async fn accept_upgrade(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    Ok(accept_upgrade_head(sock).await?.1)
}

/// [`accept_upgrade`], also returning the request head (the push scenario's parameters
/// are in its path).
pub async fn accept_upgrade_head(sock: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let (head, rest) = read_head(sock).await?;
    let key = header_value(&head, "sec-websocket-key").unwrap_or("");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    sock.write_all(resp.as_bytes()).await?;
    Ok((head, rest))
}

thread_local! {
    /// The echo app's read buffer: one per worker thread, so an idle connection holds
    /// none and a busy one allocates nothing per message.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 128 * 1024]);
}

async fn echo_conn(mut sock: TcpStream, received: Option<Arc<AtomicU64>>) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let (head, mut inbuf) = accept_upgrade_head(&mut sock).await?;
    if let Some(p) = PushParams::from_head(&head) {
        return push_conn(sock, p, inbuf).await;
    }
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Parse every complete frame in `inbuf`.
        let mut pos = 0;
        let mut closing = false;
        while let Some((hlen, plen, mask, op)) = parse_frame(&inbuf[pos..]) {
            let total = hlen + plen;
            if inbuf.len() - pos < total {
                break;
            }
            let payload = &mut inbuf[pos + hlen..pos + total];
            if let Some(m) = mask {
                unmask(payload, m);
            }
            let reply_op = match op {
                0x9 => 0xA,  // ping -> pong
                0xA => 0xFF, // pong: ignore
                0x8 => {
                    closing = true;
                    0x8
                }
                other => {
                    if let Some(r) = &received
                        && payload.starts_with(COUNTED_TAG)
                    {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    other
                }
            };
            if reply_op != 0xFF {
                push_header(&mut out, 0x80 | reply_op, plen, None);
                out.extend_from_slice(payload);
            }
            pos += total;
            if closing {
                break;
            }
        }
        if pos == inbuf.len() {
            inbuf.clear();
        } else if pos > 0 {
            inbuf.drain(..pos);
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if out.capacity() > 4096 {
            out = Vec::new();
        }
        if inbuf.is_empty() && inbuf.capacity() > 4096 {
            inbuf = Vec::new();
        }
        if closing {
            let _ = sock.shutdown().await;
            return Ok(());
        }
        sock.readable().await?;
        let r = READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let r = sock.try_read(&mut b);
            if let Ok(n) = r {
                inbuf.extend_from_slice(&b[..n]);
            }
            r
        });
        match r {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}
