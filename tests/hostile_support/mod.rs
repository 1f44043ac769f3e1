//! Shared harness for the socket-level tests: a wsdrain process on free loopback ports,
//! a strict hand-written WebSocket app whose behaviour is chosen by the request path,
//! raw clients, and metrics reading. Everything is bounded in time.

#![allow(dead_code)]

pub mod frame_log;
pub mod round2;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::common::{Launch, spawn_proxy};

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The mask every client frame in these tests carries (RFC 6455 requires one).
pub const MASK: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

/// A running `wsdrain proxy`, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Proxy {
    /// Starts the proxy in front of `upstream` with extra flags, and waits for /healthz.
    pub async fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        Self::start_limited(upstream, extra, None).await
    }

    /// Like [`Proxy::start`], with the open-file limit set to `nofile` when given. The
    /// log (level info) goes to a file, for [`Proxy::assert_sound`] to read.
    pub async fn start_limited(upstream: SocketAddr, extra: &[&str], nofile: Option<u32>) -> Proxy {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "wsdrain-test-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let logfile = std::fs::File::create(&log).expect("create the proxy's log file");
        let (child, listen, admin) = spawn_proxy(Launch {
            upstream,
            extra,
            log_level: "info",
            nofile,
            stderr: logfile.into(),
        })
        .await;
        Proxy {
            child,
            listen,
            admin,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        crate::common::rss_kib(self.pid())
    }

    /// CPU time (user + system) of the proxy, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Open file descriptors of the proxy.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The value of `websocket_errors_total{kind="<kind>"}` (0 when absent).
    pub async fn errors(&self, kind: &str) -> u64 {
        self.metric(&format!("websocket_errors_total{{kind=\"{kind}\"}}"))
            .await
    }

    /// The value of one exact metric line prefix (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        http_raw(self.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("metrics")
    }

    /// Waits until `websocket_connections_active` is `n`.
    pub async fn wait_active(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let active = self.metric("websocket_connections_active").await;
            if active == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "websocket_connections_active stayed {active}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The proxy's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Asserts the process is alive and its log shows no panic.
    pub fn assert_sound(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "proxy exited; log:\n{}",
            self.log_text()
        );
        let log = self.log_text();
        assert!(!log.contains("panicked"), "proxy panicked:\n{log}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

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

/// Encodes one frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mbit | n as u8),
        n if n <= 0xffff => {
            out.push(mbit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mbit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

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

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A raw client: sends an upgrade for `path` and checks for the 101.
pub async fn raw_ws(proxy: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Byte by byte, so frames that follow the 101 at once stay in the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!(
                "no 101 head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 101"), "no 101: {text}");
    s
}

/// A masked text frame from a client.
pub fn client_text(text: &str) -> Vec<u8> {
    frame(true, 1, text.as_bytes(), Some([0x11, 0x22, 0x33, 0x44]))
}

/// Sends a text message over a raw client and expects it echoed.
pub async fn echo_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, text: &str) {
    s.write_all(&client_text(text)).await.unwrap();
    let f = timeout(WAIT, read_frame(s))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(f.opcode, 1);
    assert!(!f.masked, "server frames are not masked");
    assert_eq!(f.payload, text.as_bytes());
}

/// A healthy connection through the proxy: opened before the hostile part of a test,
/// checked after it (and a fresh one too).
pub struct Healthy {
    pub s: TcpStream,
}

impl Healthy {
    pub async fn open(proxy: &Proxy) -> Healthy {
        let mut s = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut s, "hello before").await;
        Healthy { s }
    }

    /// The old connection still echoes, and a new one can be opened and echoes.
    pub async fn check(&mut self, proxy: &Proxy) {
        echo_roundtrip(&mut self.s, "still alive").await;
        let mut fresh = raw_ws(proxy.listen, "/echo").await;
        echo_roundtrip(&mut fresh, "fresh one").await;
        let _ = fresh
            .write_all(&frame(true, 8, &1000u16.to_be_bytes(), Some([1, 2, 3, 4])))
            .await;
    }
}

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

async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
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
