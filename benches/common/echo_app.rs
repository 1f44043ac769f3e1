//! The echo app: a minimal, allocation-light WebSocket echo server, run as a child
//! process of the bench binary (`<bench> __echo-app PORT`).

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::frames::{header_value, parse_frame, push_header, read_head, unmask};
use super::process::addr;

pub async fn echo_app(port: u16) {
    let listener = TcpListener::bind(addr(port)).await.expect("bind echo app");
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = echo_conn(sock).await;
        });
    }
}

/// Answers a WebSocket upgrade on `sock` (server side). Returns bytes read past the head.
pub async fn accept_upgrade(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let (head, rest) = read_head(sock).await?;
    let key = header_value(&head, "sec-websocket-key").unwrap_or("");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    sock.write_all(resp.as_bytes()).await?;
    Ok(rest)
}

thread_local! {
    /// The echo app's read buffer: one per worker thread, so an idle connection holds
    /// none and a busy one allocates nothing per message.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 128 * 1024]);
}

async fn echo_conn(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut inbuf = accept_upgrade(&mut sock).await?;
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
                other => other,
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
