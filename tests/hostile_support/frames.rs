//! WebSocket frames by hand: encoded exactly as a test means them (masked or not, any
//! opcode, any length) and read back as the proxy sent them.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::*;

/// Encodes one frame (the one encoder the tests share, `tests/common/ws_frame.rs`).
pub use crate::common::ws_frame::frame;

/// A frame as read: fin, opcode, masked, unmasked payload.
#[derive(Debug, Clone)]
pub struct RxFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RxFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one frame (payloads up to 16 MiB).
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<RxFrame> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 16 << 20 {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(RxFrame {
        fin: h[0] & 0x80 != 0,
        opcode: h[0] & 0x0f,
        masked,
        payload,
    })
}

/// Reads frames until a close (returned) or EOF/timeout (None).
pub async fn read_until_close<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<RxFrame> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, read_frame(s)).await {
            Ok(Ok(f)) if f.opcode == 8 => return Some(f),
            Ok(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// True when the peer closes the stream (EOF or reset) within `limit`, reading and
/// dropping anything that still arrives.
pub async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// What a well-behaved client does after the proxy sent it a close frame: answer with a
/// masked close carrying the same code. True when the proxy then ends the TCP connection
/// within `limit` (a write error means it already has).
pub async fn answer_close<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    code: u16,
    limit: Duration,
) -> bool {
    let _ = s
        .write_all(&frame(true, 8, &code.to_be_bytes(), MASK))
        .await;
    closed_within(s, limit).await
}

/// A masked text frame from a client.
pub fn client_text(text: &str) -> Vec<u8> {
    frame(true, 1, text.as_bytes(), Some([0x11, 0x22, 0x33, 0x44]))
}
