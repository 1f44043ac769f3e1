//! The strict hand-written app behind the proxy, its behaviour picked by the request
//! path, and `serve_each` for tests that bring an app of their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::*;

/// What the app has seen: request lines, in order.
#[derive(Default, Clone)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The test app. Behaviour by path:
/// - plain requests: 200 with `seen <request line>`; `/stall-http` never answers;
///   `/close-after...` closes the connection right after its answer.
/// - upgrades: checks version (426) and key (400) as a strict server does, then
///   `/stall` (never answers), `/reset` (RST after reading the request), `/hangup` (FIN
///   after reading the request), `/flood` (sends 64 KiB frames until the socket breaks),
///   `/die-mid-frame` (half a frame, then gone), `/die` (gone after the first message,
///   at a frame boundary), `/sink` (never reads), `/big-out` (sends a 100 KiB message,
///   then echoes), `/greet` (a text frame in the same write as the 101), anything else:
///   strict echo that
///   closes with 1002 on unmasked frames, reserved opcodes and invalid close codes.
pub async fn start_app() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    (serve_each(seen.clone(), app_conn).await, seen)
}

/// Serves every connection to a fresh loopback listener with `conn`, handing each a
/// clone of `state`, until the test ends; returns the listener's address.
pub async fn serve_each<S, F, Fut>(state: S, conn: F) -> SocketAddr
where
    S: Clone + Send + 'static,
    F: Fn(TcpStream, S) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(conn(s, state.clone()));
        }
    });
    addr
}

pub async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = buf[..end + 4].to_vec();
            buf.drain(..end + 4);
            return Ok(Some(head));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn app_conn(mut s: TcpStream, seen: Seen) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(&mut s, &mut buf).await? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        seen.0.lock().unwrap().push(request_line.clone());
        let upgrade = headers
            .get("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !upgrade {
            // Consume a body: Content-Length or chunked.
            if let Some(n) = headers
                .get("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                while buf.len() < n {
                    let mut chunk = [0u8; 4096];
                    let k = s.read(&mut chunk).await?;
                    if k == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                buf.drain(..n);
            } else if headers
                .get("transfer-encoding")
                .is_some_and(|v| v.contains("chunked"))
            {
                loop {
                    if let Some(end) = find(&buf, b"0\r\n\r\n") {
                        buf.drain(..end + 5);
                        break;
                    }
                    let mut chunk = [0u8; 4096];
                    let k = s.read(&mut chunk).await?;
                    if k == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
            }
            if path == "/stall-http" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let body = format!("seen {request_line}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await?;
            if path.starts_with("/close-after") {
                // Closes after the answer without saying so (no `Connection: close`),
                // as a server whose keep-alive timeout just expired does.
                return Ok(());
            }
            continue;
        }
        match path.as_str() {
            "/stall" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            "/reset" => {
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            "/hangup" => return Ok(()),
            _ => {}
        }
        if headers.get("sec-websocket-version").map(String::as_str) != Some("13") {
            let body = "unsupported websocket version\n";
            let resp = format!(
                "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await?;
            continue;
        }
        let Some(key) = headers.get("sec-websocket-key") else {
            let body = "missing Sec-WebSocket-Key\n";
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\nX-App-Verdict: missing-key\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await?;
            continue;
        };
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        let mut resp = resp.into_bytes();
        if path == "/greet" {
            // A greeting in the same write as the 101: it reaches wsdrain as bytes read
            // ahead by the handshake.
            resp.extend(frame(true, 1, b"welcome", None));
        }
        s.write_all(&resp).await?;
        return match path.as_str() {
            "/flood" => {
                let f = frame(true, 2, &vec![0x5a; 64 * 1024], None);
                loop {
                    s.write_all(&f).await?;
                }
            }
            "/die-mid-frame" => {
                let mut f = frame(true, 2, &vec![1u8; 100_000], None);
                f.truncate(1000);
                s.write_all(&f).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                Ok(())
            }
            "/die" => {
                let mut r =
                    AsyncReadExt::chain(std::io::Cursor::new(std::mem::take(&mut buf)), &mut s);
                let _ = read_frame(&mut r).await?;
                Ok(())
            }
            "/sink" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            "/big-out" => {
                s.write_all(&frame(true, 2, &vec![9u8; 100 * 1024], None))
                    .await?;
                strict_echo(s, buf).await
            }
            _ => strict_echo(s, buf).await,
        };
    }
}

pub async fn strict_echo(mut s: TcpStream, early: Vec<u8>) -> std::io::Result<()> {
    let (rd, mut wr) = s.split();
    let mut r = AsyncReadExt::chain(std::io::Cursor::new(early), rd);
    loop {
        let f = match read_frame(&mut r).await {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        let violation = !f.masked
            || matches!(f.opcode, 3..=7 | 11..=15)
            || (f.opcode >= 8 && f.payload.len() > 125)
            || (f.opcode == 8
                && (f.payload.len() == 1
                    || f.close_code()
                        .is_some_and(|c| !matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))));
        if violation {
            wr.write_all(&frame(true, 8, &1002u16.to_be_bytes(), None))
                .await?;
            let _ = wr.shutdown().await;
            // Wait for the peer's close, then go.
            let _ = timeout(Duration::from_secs(2), read_until_close(&mut r, WAIT)).await;
            return Ok(());
        }
        match f.opcode {
            8 => {
                wr.write_all(&frame(true, 8, &f.payload, None)).await?;
                let _ = wr.shutdown().await;
                return Ok(());
            }
            9 => wr.write_all(&frame(true, 10, &f.payload, None)).await?,
            10 => {}
            op => wr.write_all(&frame(f.fin, op, &f.payload, None)).await?,
        }
    }
}
