//! An app that writes down what reaches it over a WebSocket, in order: each data frame's
//! text, each close frame's code, and the EOF. Close-handshake tests read the log to
//! see whether the app got a close frame before its TCP connection ended, and how many.
//!
//! The app answers a close it did not start with a close of the same code and then
//! half-closes, as a server does (RFC 6455 §5.5.1). A text message `close now` makes it
//! start a close of its own (code 1000) instead; it then waits for the reply.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{frame, read_frame, read_head, serve_each};

/// What the app saw on its connections, one line per event: `text <payload>`,
/// `close <code>` (or `close none`), `eof`.
#[derive(Default, Clone)]
pub struct FrameLog(Arc<Mutex<Vec<String>>>);

impl FrameLog {
    /// The events so far.
    pub fn events(&self) -> Vec<String> {
        self.0.lock().expect("frame log").clone()
    }

    fn push(&self, event: String) {
        self.0.lock().expect("frame log").push(event);
    }

    /// Waits (bounded by `super::WAIT`) until the log holds an `eof`, and returns it.
    pub async fn until_eof(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + super::WAIT;
        loop {
            let events = self.events();
            if events.iter().any(|e| e == "eof") || std::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Starts the logging app on a loopback port.
pub async fn start_logging_app() -> (SocketAddr, FrameLog) {
    let log = FrameLog::default();
    (serve_each(log.clone(), logging_conn).await, log)
}

async fn logging_conn(mut s: TcpStream, log: FrameLog) -> std::io::Result<()> {
    let mut early = Vec::new();
    let Some(head) = read_head(&mut s, &mut early).await? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let key = text
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    s.write_all(resp.as_bytes()).await?;
    let (rd, mut wr) = s.split();
    let mut r = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(early), rd);
    let mut closed_first = false;
    loop {
        let Ok(f) = read_frame(&mut r).await else {
            log.push("eof".into());
            return Ok(());
        };
        match f.opcode {
            8 => {
                let code = f.close_code().map_or("none".into(), |c| c.to_string());
                log.push(format!("close {code}"));
                if !closed_first {
                    wr.write_all(&frame(true, 8, &f.payload, None)).await?;
                    wr.shutdown().await?;
                }
            }
            1 if f.payload == b"close now" => {
                log.push("text close now".into());
                wr.write_all(&frame(true, 8, &1000u16.to_be_bytes(), None))
                    .await?;
                closed_first = true;
            }
            _ => log.push(format!("text {}", String::from_utf8_lossy(&f.payload))),
        }
    }
}
