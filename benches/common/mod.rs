//! Shared pieces of the side-by-side benches: the echo app, the plain TCP relay, the
//! contenders (wsdrain, nginx, HAProxy) as child processes, a minimal WebSocket client,
//! and process bookkeeping (ports, RSS, file-descriptor limit).
//!
//! The echo app and the TCP relay run as child processes of the bench binary itself
//! (`<bench> __echo-app PORT`, `<bench> __tcp-relay LISTEN UPSTREAM`), so every
//! contender is a separate process, like the real deployment, and the load generator
//! in the parent process measures them all the same way.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// True when `WSDRAIN_BENCH_SMOKE` is set to anything but `0` or empty.
pub fn smoke() -> bool {
    std::env::var("WSDRAIN_BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where results go: `WSDRAIN_BENCH_OUT`, else `<target dir>/wsdrain-bench`.
pub fn out_dir() -> PathBuf {
    let dir = match std::env::var_os("WSDRAIN_BENCH_OUT") {
        Some(d) => PathBuf::from(d),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("wsdrain-bench")
        }
    };
    std::fs::create_dir_all(&dir).expect("create the bench output directory");
    dir
}

/// The wsdrain binary Cargo built for this bench (release for `cargo bench`, debug for
/// `cargo test --benches`), or `WSDRAIN_BIN`.
pub fn wsdrain_bin() -> PathBuf {
    std::env::var_os("WSDRAIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wsdrain")))
}

/// Raises the soft file-descriptor limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a stack value.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Handles the hidden child-process modes. Returns true when this process was one.
pub fn run_child_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__echo-app") => {
            let port: u16 = args[2].parse().expect("port");
            runtime().block_on(echo_app(port));
            true
        }
        Some("__load") => {
            // For profiling: `<bench> __load PORT CONNS SIZE SECONDS`.
            let n = |i: usize| args[i].parse::<usize>().expect("number");
            let (port, conns, size, secs) = (n(2) as u16, n(3), n(4), n(5));
            let (rt_s, _) = runtime().block_on(load_for(
                port,
                conns,
                size,
                Duration::from_secs(secs as u64),
            ));
            println!("{rt_s:.0} round trips/s");
            true
        }
        Some("__tcp-relay") => {
            let listen: u16 = args[2].parse().expect("port");
            let upstream: u16 = args[3].parse().expect("port");
            runtime().block_on(tcp_relay(listen, upstream));
            true
        }
        _ => false,
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------
// The echo app: a minimal, allocation-light WebSocket echo server.

async fn echo_app(port: u16) {
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

/// Reads an HTTP request or response head; returns (head, bytes after it).
pub async fn read_head(sock: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
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

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
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

// ---------------------------------------------------------------------------------------
// The plain relay: tokio copy_bidirectional, the ceiling for any passthrough relay.

async fn tcp_relay(listen: u16, upstream: u16) {
    let listener = TcpListener::bind(addr(listen)).await.expect("bind relay");
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut app) = TcpStream::connect(addr(upstream)).await else {
                return;
            };
            let _ = app.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Child processes.

/// A child process in its own process group; the whole group is killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// Extra files (configs, logs) that go away with it.
    pub dir: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: Option<PathBuf>) -> Proc {
        cmd.process_group(0).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child dies with the bench process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
            cmd.stdout(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Sum of VmRSS (KiB) over every live process in this child's process group.
    pub fn rss_kib(&self) -> u64 {
        group_rss_kib(self.pid())
    }

    /// CPU time (user + system, seconds) used so far by every live process in the group.
    pub fn cpu_secs(&self) -> f64 {
        group_cpu_secs(self.pid())
    }

    /// Waits up to `limit` for the process to exit; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: the group id is our own child's pid (process_group(0)).
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Pids of the live processes in process group `pgid`.
fn group_pids(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| stat[i + 1..].to_string()) else {
            continue;
        };
        let pgrp = after
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            out.push((pid, after));
        }
    }
    out
}

pub fn group_cpu_secs(pgid: i32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    group_pids(pgid)
        .iter()
        .map(|(_, after)| {
            // After ")": state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
            // cmajflt utime(11) stime(12).
            let f: Vec<&str> = after.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / hz
        })
        .sum()
}

fn group_rss_kib(pgid: i32) -> u64 {
    group_pids(pgid)
        .iter()
        .map(|&(pid, _)| vm_rss_kib(pid))
        .sum()
}

pub fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn self_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.args(args);
    c
}

pub fn spawn_echo_app(port: u16) -> Proc {
    Proc::spawn(
        "echo-app",
        self_cmd(&["__echo-app", &port.to_string()]),
        None,
    )
}

pub fn spawn_tcp_relay(port: u16, app: u16) -> Proc {
    Proc::spawn(
        "tcp-relay",
        self_cmd(&["__tcp-relay", &port.to_string(), &app.to_string()]),
        None,
    )
}

pub fn spawn_wsdrain(port: u16, app: u16, extra: &[&str]) -> Proc {
    let admin = free_port();
    let mut c = Command::new(wsdrain_bin());
    c.args([
        "proxy",
        "--listen",
        &addr(port).to_string(),
        "--upstream",
        &addr(app).to_string(),
        "--admin",
        &addr(admin).to_string(),
        "--max-connections",
        "9000",
        "--log-level",
        "warn",
    ]);
    c.args(extra);
    Proc::spawn("wsdrain", c, None)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wsdrain-bench-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Makes sure `bin` is installed: when absent, `apt-get install -y <pkg>` (as root).
/// Returns false (and says why) when it cannot be had.
pub fn ensure_installed(bin: &str, pkg: &str) -> bool {
    let found = |b: &str| {
        [
            "/usr/sbin/",
            "/usr/bin/",
            "/usr/local/sbin/",
            "/usr/local/bin/",
        ]
        .iter()
        .any(|d| Path::new(&format!("{d}{b}")).exists())
    };
    if found(bin) {
        return true;
    }
    eprintln!("{bin} not found: apt-get install -y {pkg}");
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["install", "-y", "-qq", "--no-install-recommends", pkg]) {
        ok(&["update", "-qq"]);
        ok(&["install", "-y", "-qq", "--no-install-recommends", pkg]);
    }
    if !found(bin) {
        eprintln!("{bin} is not available: its figures are skipped");
        return false;
    }
    // Debian starts the packaged service on install; the bench runs its own copy.
    let _ = Command::new("service").args([bin, "stop"]).status();
    true
}

fn bin_path(bin: &str) -> String {
    [
        "/usr/sbin/",
        "/usr/bin/",
        "/usr/local/sbin/",
        "/usr/local/bin/",
    ]
    .iter()
    .map(|d| format!("{d}{bin}"))
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| bin.to_string())
}

/// nginx in the foreground, two workers, WebSocket proxying as its docs describe
/// (`proxy_http_version 1.1` and the Upgrade/Connection headers).
pub fn spawn_nginx(port: u16, app: u16) -> Proc {
    let dir = temp_dir("nginx");
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 40000;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{app};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"#
    );
    // Workers of a root master run as `nobody`: let them use the temp dirs.
    let _ = Command::new("chmod").args(["-R", "777"]).arg(&dir).status();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut c = Command::new(bin_path("nginx"));
    c.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf"));
    c.stderr(Stdio::null());
    Proc::spawn("nginx", c, Some(dir))
}

/// HAProxy in the foreground (`-db`), two threads, HTTP mode: WebSocket upgrades
/// switch to tunnel mode by themselves; `timeout tunnel` as its docs recommend.
/// `spread` sets `close-spread-time` and `hard-stop-after` for the drain bench.
pub fn spawn_haproxy(port: u16, app: u16, spread: Option<(Duration, Duration)>) -> Proc {
    let dir = temp_dir("haproxy");
    let stop = match spread {
        Some((spread, hard)) => format!(
            "    close-spread-time {}ms\n    hard-stop-after {}ms\n",
            spread.as_millis(),
            hard.as_millis()
        ),
        None => String::new(),
    };
    let conf = format!(
        r#"global
    maxconn 9000
    nbthread 2
{stop}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:{port}
    default_backend app

backend app
    server app 127.0.0.1:{app}
"#
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let mut c = Command::new(bin_path("haproxy"));
    c.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        c.stderr(Stdio::null());
    }
    Proc::spawn("haproxy", c, Some(dir))
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

/// Writes `text` to `path`, saying so.
pub fn write_out(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create output file");
    f.write_all(text.as_bytes()).expect("write output file");
    eprintln!("wrote {}", path.display());
}

/// Machine and load facts recorded next to the numbers.
pub fn machine_info() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    m.insert("cpu".into(), cpu);
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string(),
    );
    m.insert("loadavg".into(), read("/proc/loadavg").trim().to_string());
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    let ver = |cmd: &str, arg: &str| {
        Command::new(bin_path(cmd))
            .arg(arg)
            .output()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                s.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    m.insert("nginx".into(), ver("nginx", "-v"));
    m.insert("haproxy".into(), ver("haproxy", "-v"));
    m.insert(
        "profile".into(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
    );
    m
}
