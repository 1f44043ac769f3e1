//! The WebSocket and HTTP wire pieces both ends of a bench connection need: frame
//! headers, masking, and reading an HTTP head.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads an HTTP request or response head; returns (head, bytes after it).
pub async fn read_head<S: AsyncRead + Unpin>(sock: &mut S) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf[end + 4..].to_vec();
            buf.truncate(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 16384 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

pub(super) fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Parses a frame header: (header length, payload length, mask, opcode).
pub fn parse_frame(b: &[u8]) -> Option<(usize, usize, Option<[u8; 4]>, u8)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (plen, mut hlen) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if b.len() < hlen + 4 {
            return None;
        }
        let m = [b[hlen], b[hlen + 1], b[hlen + 2], b[hlen + 3]];
        hlen += 4;
        Some(m)
    } else {
        None
    };
    Some((hlen, plen, mask, op))
}

pub fn unmask(payload: &mut [u8], m: [u8; 4]) {
    let word = u32::from_ne_bytes(m);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

pub fn push_header(out: &mut Vec<u8>, b0: u8, plen: usize, mask: Option<[u8; 4]>) {
    out.push(b0);
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    if plen < 126 {
        out.push(mbit | plen as u8);
    } else if plen <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(plen as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(plen as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}
