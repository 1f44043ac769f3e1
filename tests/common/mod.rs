//! Shared parts of the integration tests: a real echo app, a real `wsdrain` process,
//! and small helpers. Everything runs on 127.0.0.1 with bounded timeouts.
#![allow(dead_code)]
// tungstenite fixes the callback signature; its error type is large by design.
#![allow(clippy::result_large_err)]

pub mod clients;
pub mod ws_frame;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A free loopback address (bound, then released for a child process to take).
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by
/// default), where no outgoing connection is ever given a local port: a port released
/// by `bind(0)` could be handed to another test's client connection before the child
/// binds it (seen in CI: "binding the admin address …: Address already in use"). Each
/// call takes the next port of a sequence that starts at a per-process offset, so the
/// tests of one binary, which run in parallel, never pick the same one.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&low_ephemeral| low_ephemeral > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOW + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(l) = StdListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("a bound listener's address");
        }
    }
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Waits up to 10 s for `addr` to accept a TCP connection: a child process coming up.
pub async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The port of [`free_addr`], for flags that take a port.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// What the echo app observed, for assertions.
#[derive(Default, Debug)]
pub struct Seen {
    /// Request headers of each upgrade, lower-case names.
    pub headers: Vec<Vec<(String, String)>>,
    /// Text messages received, in order of arrival, across connections.
    pub texts: Vec<String>,
    /// Close codes received from the proxy.
    pub close_codes: Vec<Option<u16>>,
    /// Connections that ended without a close frame.
    pub no_close: usize,
    /// Pong frames that reached the app.
    pub pongs: usize,
}

/// A tokio-tungstenite echo app on a loopback port.
pub struct EchoApp {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoApp {
    /// Starts the app; it echoes every data message and answers "select" with the
    /// first offered subprotocol.
    pub async fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo app");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                tokio::spawn(serve_echo(stream, seen));
            }
        });
        EchoApp { addr, seen, task }
    }
}

async fn serve_echo(stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let seen_hdr = seen.clone();
    let callback = move |req: &Request, mut resp: Response| {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        if let Some(p) = req.headers().get("sec-websocket-protocol") {
            let first = p
                .to_str()
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            resp.headers_mut()
                .insert("sec-websocket-protocol", first.parse().expect("header"));
        }
        seen_hdr.lock().expect("lock").headers.push(headers);
        Ok(resp)
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let mut closed = false;
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) => {
                seen.lock().expect("lock").texts.push(t.to_string());
                Some(Message::Text(t))
            }
            Message::Binary(b) => Some(Message::Binary(b)),
            Message::Pong(_) => {
                seen.lock().expect("lock").pongs += 1;
                None
            }
            Message::Close(frame) => {
                closed = true;
                seen.lock()
                    .expect("lock")
                    .close_codes
                    .push(frame.map(|f| u16::from(f.code)));
                None
            }
            _ => None,
        };
        if let Some(reply) = reply
            && ws.send(reply).await.is_err()
        {
            break;
        }
    }
    if !closed {
        seen.lock().expect("lock").no_close += 1;
    }
}

/// How a test runs `wsdrain proxy`. Every harness (this one and `hostile_support`) starts
/// the process through [`spawn_proxy`], so the ports, flags and readiness check are
/// decided in one place.
pub struct Launch<'a> {
    pub upstream: SocketAddr,
    pub extra: &'a [&'a str],
    pub log_level: &'a str,
    /// The open-file limit to run under (`ulimit -n`), when a test needs a small one.
    pub nofile: Option<u32>,
    /// Where the proxy's log (stderr) goes.
    pub stderr: Stdio,
}

/// The wsdrain binary every process test runs: this build, or the one named by
/// `WSDRAIN_TEST_BIN` (say, the last release's), to see which behaviours a change fixed.
pub fn wsdrain_bin() -> String {
    std::env::var("WSDRAIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsdrain").to_string())
}

/// `wsdrain webhook` on `addr` with the pair `dir/tls.crt` + `dir/tls.key`, stopping at
/// once on SIGTERM (`--shutdown-delay 0s`): the launch every webhook test shares.
pub fn webhook_command(addr: SocketAddr, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(wsdrain_bin());
    cmd.args([
        "webhook",
        "--listen",
        &addr.to_string(),
        "--shutdown-delay",
        "0s",
    ])
    .arg("--tls-cert")
    .arg(dir.join("tls.crt"))
    .arg("--tls-key")
    .arg(dir.join("tls.key"));
    cmd
}

/// Spawns `wsdrain proxy` on two free loopback ports (listen, admin) and returns once
/// `/healthz` answers 200. Panics with the exit status if the process dies first, and
/// after 10 s if it never answers.
pub async fn spawn_proxy(launch: Launch<'_>) -> (Child, SocketAddr, SocketAddr) {
    let listen = free_addr();
    let bin = wsdrain_bin();
    let admin = free_addr();
    let mut cmd = match launch.nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]);
            c.arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut child = cmd
        .arg("proxy")
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &launch.upstream.to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--log-level", launch.log_level])
        .args(launch.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(launch.stderr)
        .spawn()
        .expect("spawn wsdrain");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = http(admin, "GET", "/healthz", &[], b"").await {
            return (child, listen, admin);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("wsdrain exited before it came up: {status}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsdrain did not come up on {admin}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `wsdrain proxy` child process.
pub struct Proxy {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts `wsdrain proxy` in front of `upstream` with extra flags (log level warn,
    /// log on the test's stderr), and waits until its admin port answers.
    pub async fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        let (child, listen, admin) = spawn_proxy(Launch {
            upstream,
            extra,
            log_level: "warn",
            nofile: None,
            stderr: Stdio::inherit(),
        })
        .await;
        Proxy {
            child,
            listen,
            admin,
        }
    }

    /// ws:// URL of the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.listen, path)
    }

    /// Sends a signal to the proxy process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `within`; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The value of one metric sample (exact series text, e.g. `x{a="b"}`), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = http(self.admin, "GET", "/metrics", &[], b"")
            .await
            .expect("metrics");
        metric_value(&body, series)
    }

    /// The series' value once it reads `want`, or its last value after `within`. A
    /// client sees its 101 a moment before the relay registers it, so a count read
    /// straight after connecting can lag by the last few clients.
    pub async fn metric_reaching(&self, series: &str, want: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let got = self.metric(series).await;
            if got == want || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Finds a sample in Prometheus text; 0 when the series is not there.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A minimal HTTP/1.1 request over a fresh connection (Connection: close); returns
/// status and body. Good enough for the admin port and simple proxy checks.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let (status, _, body) = http_full(addr, method, path, headers, body).await?;
    Ok((status, body))
}

/// Like [`http`], also returning the raw response head.
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("read timeout"))??;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

/// The close frame a client received, if any.
pub fn close_code(frame: &Option<CloseFrame>) -> Option<u16> {
    frame.as_ref().map(|f| u16::from(f.code))
}

/// Resident memory of a live process, in KiB (panics if the process is gone: a
/// memory assertion on nothing would pass for the wrong reason).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}
