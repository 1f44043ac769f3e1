//! The push scenario: the app sends and the clients only listen, the way a ticker, a chat
//! room or a dashboard uses a WebSocket. Every client gets one sequence-numbered message
//! every interval, all clients in the same burst; each message carries the app's send
//! time, so a client can time the delivery (app and clients are on one box and read one
//! clock, `CLOCK_MONOTONIC`), and its sequence number, so a client can tell a lost or a
//! reordered message.
//!
//! The app side is the bench's echo app: a WebSocket opened on `/push?size=S&count=N&
//! interval_ms=I` is a push connection. The client's first frame carries the start time
//! (monotonic ns); from then on the app sends message k at start + k·I, N messages of S
//! bytes, and then waits for the client to close. The start time is common to all
//! clients of a run, so their messages leave in one burst per interval.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::frames::{parse_frame, push_header, read_head, unmask};
use super::process::{Proc, addr};

/// Bytes at the start of every pushed message: sequence number and send time (both u64 LE).
const STAMP: usize = 16;

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock every process on the box shares.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec on our stack.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The tokio instant at monotonic time `at` (now, when `at` has passed).
fn instant_at(at: u64) -> Instant {
    let now = mono_ns();
    Instant::now() + Duration::from_nanos(at.saturating_sub(now))
}

/// What one push connection is asked to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushParams {
    /// Payload bytes per message (at least the 16-byte stamp).
    pub size: usize,
    /// Messages per connection.
    pub count: u64,
    /// Time between two bursts.
    pub interval: Duration,
}

impl PushParams {
    /// The request path that asks the app for these messages.
    pub fn path(&self) -> String {
        format!(
            "/push?size={}&count={}&interval_ms={}",
            self.size,
            self.count,
            self.interval.as_millis()
        )
    }

    /// Reads the parameters back from an HTTP request head (None: not a push request).
    pub fn from_head(head: &str) -> Option<PushParams> {
        let target = head.lines().next()?.split_whitespace().nth(1)?;
        let query = target.strip_prefix("/push?")?;
        let get = |key: &str| -> Option<u64> {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(PushParams {
            size: (get("size")? as usize).max(STAMP),
            count: get("count")?,
            interval: Duration::from_millis(get("interval_ms")?),
        })
    }
}

/// The app's side of one push connection (upgrade already answered; `inbuf` holds what
/// came after the request head).
pub async fn push_conn(
    mut sock: TcpStream,
    p: PushParams,
    mut inbuf: Vec<u8>,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 512];
    // The client's first frame: the start time of the first burst.
    let start = loop {
        if let Some((hlen, plen, mask, _)) = parse_frame(&inbuf)
            && inbuf.len() >= hlen + plen
        {
            let payload = &mut inbuf[hlen..hlen + plen];
            if let Some(m) = mask {
                unmask(payload, m);
            }
            let start = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| std::io::Error::other("start frame shorter than 8 bytes"))?;
            inbuf.drain(..hlen + plen);
            break start;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        inbuf.extend_from_slice(&chunk[..n]);
    };
    let interval = p.interval.as_nanos() as u64;
    let mut frame = Vec::with_capacity(p.size + 10);
    for seq in 0..p.count {
        tokio::time::sleep_until(instant_at(start + seq * interval)).await;
        frame.clear();
        push_header(&mut frame, 0x82, p.size, None);
        let body = frame.len();
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&mono_ns().to_le_bytes());
        frame.resize(body + p.size, 0x5a);
        sock.write_all(&frame).await?;
    }
    // Done: answer the client's close (or just see it go).
    loop {
        if let Some((hlen, plen, _, op)) = parse_frame(&inbuf)
            && inbuf.len() >= hlen + plen
        {
            inbuf.drain(..hlen + plen);
            if op == 0x8 {
                let _ = sock.write_all(&[0x88, 0]).await;
                let _ = sock.shutdown().await;
                return Ok(());
            }
            continue;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        inbuf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a WebSocket to 127.0.0.1:`port` on `path`; returns it and the bytes after the 101.
pub async fn ws_connect_path(port: u16, path: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut sock = TcpStream::connect(addr(port)).await?;
    sock.set_nodelay(true)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
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

/// One client's tally.
#[derive(Default)]
struct Tally {
    received: u64,
    /// Messages that arrived after one with a higher sequence number (or twice).
    reordered: u64,
    /// Sequence numbers seen at least once.
    unique: u64,
    lat_ns: Vec<u32>,
    error: bool,
}

/// Reads `p.count` pushed messages on `sock` (bounded by `deadline`), timing each.
async fn listen(sock: &mut TcpStream, mut buf: Vec<u8>, p: PushParams, deadline: Instant) -> Tally {
    let mut t = Tally {
        lat_ns: Vec::with_capacity(p.count as usize),
        ..Tally::default()
    };
    let mut seen = vec![false; p.count as usize];
    let mut highest: Option<u64> = None;
    let mut chunk = vec![0u8; 4096];
    while t.unique < p.count {
        let mut pos = 0;
        let now = mono_ns();
        while let Some((hlen, plen, _, op)) = parse_frame(&buf[pos..]) {
            if buf.len() - pos < hlen + plen {
                break;
            }
            let payload = &buf[pos + hlen..pos + hlen + plen];
            pos += hlen + plen;
            if op != 0x2 || payload.len() < STAMP {
                continue;
            }
            let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
            let sent = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
            t.received += 1;
            t.lat_ns
                .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            if highest.is_some_and(|h| seq <= h) {
                t.reordered += 1;
            }
            highest = Some(highest.map_or(seq, |h| h.max(seq)));
            if let Some(s) = seen.get_mut(seq as usize)
                && !*s
            {
                *s = true;
                t.unique += 1;
            }
        }
        buf.drain(..pos);
        if t.unique >= p.count {
            break;
        }
        match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                t.error = true;
                break;
            }
        }
    }
    t
}

/// The figures of one contender in one push run.
#[derive(Default, Clone)]
pub struct PushRun {
    pub clients: usize,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub reordered: u64,
    /// Clients that could not connect, or stopped before their last message.
    pub errors: u64,
    /// Delivery latencies, sorted (ns).
    pub lat_ns: Vec<u32>,
    /// The contender's CPU seconds from the first burst to the last delivery.
    pub cpu: Option<f64>,
}

impl PushRun {
    /// The contender's CPU µs per delivered message (None for direct).
    pub fn cpu_us(&self) -> Option<f64> {
        self.cpu.map(|c| c * 1e6 / self.delivered.max(1) as f64)
    }

    /// The `q` quantile of the delivery latency, in ms.
    pub fn lat_ms(&self, q: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_ns.len() as f64 - 1.0) * q).round() as usize;
        self.lat_ns[i] as f64 / 1e6
    }
}

/// `clients` push connections through `port`, each carrying `p`; `proc` (the contender)
/// is charged the CPU it used between the first burst and the last delivery.
pub async fn push_load(port: u16, clients: usize, p: PushParams, proc: Option<&Proc>) -> PushRun {
    let (socks, failed) = push_connect(port, clients, p).await;
    push_run(socks, failed, p, proc).await
}

/// Opens `clients` push connections through `port` (200 at a time); returns them and how
/// many could not be opened.
pub async fn push_connect(
    port: u16,
    clients: usize,
    p: PushParams,
) -> (Vec<(TcpStream, Vec<u8>)>, u64) {
    let path = p.path();
    let mut socks = Vec::with_capacity(clients);
    let mut failed = 0;
    for chunk in (0..clients).collect::<Vec<_>>().chunks(200) {
        let futs: Vec<_> = chunk.iter().map(|_| ws_connect_path(port, &path)).collect();
        for r in futures_util::future::join_all(futs).await {
            match r {
                Ok(s) => socks.push(s),
                Err(e) => {
                    eprintln!("push client could not connect: {e}");
                    failed += 1;
                }
            }
        }
    }
    (socks, failed)
}

/// Starts the bursts on connections from [`push_connect`] and tallies the deliveries.
pub async fn push_run(
    socks: Vec<(TcpStream, Vec<u8>)>,
    failed: u64,
    p: PushParams,
    proc: Option<&Proc>,
) -> PushRun {
    let clients = socks.len() + failed as usize;
    let mut run = PushRun {
        clients,
        expected: clients as u64 * p.count,
        errors: failed,
        ..PushRun::default()
    };
    // Time for every client to send its start frame, then the first burst.
    let start = mono_ns() + 200_000_000 + socks.len() as u64 * 50_000;
    let end = start + p.count * p.interval.as_nanos() as u64;
    let deadline = instant_at(end) + Duration::from_secs(10);
    let mut go = Vec::with_capacity(14);
    let mask = [0x11, 0x22, 0x33, 0x44];
    push_header(&mut go, 0x82, 8, Some(mask));
    let body = go.len();
    go.extend_from_slice(&start.to_le_bytes());
    unmask(&mut go[body..], mask);
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|(mut sock, rest)| {
            let go = go.clone();
            tokio::spawn(async move {
                if sock.write_all(&go).await.is_err() {
                    return (
                        sock,
                        Tally {
                            error: true,
                            ..Tally::default()
                        },
                    );
                }
                let t = listen(&mut sock, rest, p, deadline).await;
                (sock, t)
            })
        })
        .collect();
    tokio::time::sleep_until(instant_at(start.saturating_sub(20_000_000))).await;
    let cpu0 = proc.map(Proc::cpu_secs);
    let mut kept = Vec::with_capacity(tasks.len());
    for task in tasks {
        let Ok((sock, t)) = task.await else {
            run.errors += 1;
            continue;
        };
        run.delivered += t.unique;
        run.reordered += t.reordered;
        run.errors += t.error as u64;
        run.lat_ns.extend(t.lat_ns);
        kept.push(sock);
    }
    run.cpu = cpu0.and_then(|c0| proc.map(|p| p.cpu_secs() - c0));
    run.lost = run.expected - run.delivered.min(run.expected);
    run.lat_ns.sort_unstable();
    // Close every client (a close frame, then the socket goes).
    let close = super::client::client_close(1000);
    for chunk in kept.chunks_mut(500) {
        let futs: Vec<_> = chunk.iter_mut().map(|s| s.write_all(&close)).collect();
        let _ = futures_util::future::join_all(futs).await;
    }
    drop(kept);
    run
}

/// Settings of the push scenario.
#[derive(Clone, Copy, Debug)]
pub struct PushSettings {
    pub rounds: usize,
    pub clients: usize,
    pub bursts: u64,
    pub interval: Duration,
}

/// Message sizes of the scenario: (name, payload bytes).
pub const PUSH_SIZES: [(&str, usize); 2] = [("push_64", 64), ("push_1k", 1024)];

/// Contenders whose cost wsdrain's is compared with (the tokio relay is a ceiling, not a
/// proxy anyone deploys; direct is the floor).
const PEERS: [&str; 4] = ["nginx", "haproxy", "traefik", "caddy"];

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the push scenario through every contender (`(name, port, process)`), round by
/// round with the order rotating, and returns its Markdown, its JSON and whether every
/// message arrived once and in order.
pub fn run_push_scenario(
    rt: &tokio::runtime::Runtime,
    contenders: &[(&str, u16, Option<&Proc>)],
    sizes: &[(&str, usize)],
    s: PushSettings,
) -> (String, Value, bool) {
    let mut runs: BTreeMap<(String, String), Vec<PushRun>> = BTreeMap::new();
    for round in 0..s.rounds {
        for &(scenario, size) in sizes {
            let p = PushParams {
                size,
                count: s.bursts,
                interval: s.interval,
            };
            let n = contenders.len();
            for i in 0..n {
                let (name, port, proc) = contenders[(i + round) % n];
                let r = rt.block_on(push_load(port, s.clients, p, proc));
                eprintln!(
                    "round {} {scenario:<8} {name:<9} delivered {}/{} lost {} reordered {} errors {} p99 {:.2} ms cpu {}",
                    round + 1,
                    r.delivered,
                    r.expected,
                    r.lost,
                    r.reordered,
                    r.errors,
                    r.lat_ms(0.99),
                    r.cpu_us()
                        .map(|c| format!("{c:.2} µs/msg"))
                        .unwrap_or_else(|| "–".into())
                );
                runs.entry((scenario.to_string(), name.to_string()))
                    .or_default()
                    .push(r);
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    let mut md = String::new();
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut clean = true;
    for &(scenario, size) in sizes {
        md += &format!(
            "\n**Push: {size} B messages to {} clients, one each every {} ms in bursts, {} bursts** (delivery latency from the app's send to the client's receive)\n\n| contender | proxy CPU µs / delivered message | p50 ms | p99 ms | max ms | delivered | lost | reordered | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            s.clients,
            s.interval.as_millis(),
            s.bursts
        );
        for &(name, _, _) in contenders {
            let Some(rs) = runs.get(&(scenario.to_string(), name.to_string())) else {
                continue;
            };
            let each = |f: &dyn Fn(&PushRun) -> f64| median(rs.iter().map(f).collect());
            let cpu = each(&|r| r.cpu_us().unwrap_or(f64::NAN));
            let (p50, p99, max) = (
                each(&|r| r.lat_ms(0.5)),
                each(&|r| r.lat_ms(0.99)),
                each(&|r| r.lat_ms(1.0)),
            );
            let sum = |f: &dyn Fn(&PushRun) -> u64| rs.iter().map(f).sum::<u64>();
            let (delivered, lost, reordered, errors) = (
                sum(&|r| r.delivered),
                sum(&|r| r.lost),
                sum(&|r| r.reordered),
                sum(&|r| r.errors),
            );
            clean &= lost == 0 && reordered == 0 && errors == 0;
            let cpu_txt = if cpu.is_nan() {
                "–".to_string()
            } else {
                format!("{cpu:.2}")
            };
            md += &format!(
                "| {name} | {cpu_txt} | {p50:.2} | {p99:.2} | {max:.2} | {delivered} | {lost} | {reordered} | {errors} |\n"
            );
            rows.push(json!({
                "scenario": scenario, "message_bytes": size, "clients": s.clients,
                "contender": name, "proxy_cpu_us_per_message": (!cpu.is_nan()).then_some(cpu),
                "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                "delivered": delivered, "lost": lost, "reordered": reordered, "errors": errors,
                "rounds": rs.iter().map(|r| json!({
                    "proxy_cpu_us_per_message": r.cpu_us(), "p99_ms": r.lat_ms(0.99),
                    "delivered": r.delivered, "lost": r.lost, "reordered": r.reordered,
                })).collect::<Vec<_>>(),
            }));
        }
        // Targets, paired by round: wsdrain against the cheapest peer of the same round,
        // and against HAProxy's p99 of the same round.
        let of = |name: &str| runs.get(&(scenario.to_string(), name.to_string()));
        if let Some(w) = of("wsdrain") {
            let cheapest: Vec<f64> = (0..w.len())
                .map(|i| {
                    let peers: Vec<f64> = PEERS
                        .iter()
                        .filter_map(|p| of(p)?.get(i)?.cpu_us())
                        .filter(|c| *c > 0.0)
                        .collect();
                    let low = peers.into_iter().fold(f64::NAN, f64::min);
                    w[i].cpu_us().unwrap_or(f64::NAN) / low
                })
                .collect();
            let r = median(cheapest);
            if !r.is_nan() {
                md += &format!(
                    "\nTarget: wsdrain's proxy CPU per delivered message ≤ 0.9× the cheapest of {} (paired by round): {r:.2}× — {}.\n",
                    PEERS.join(", "),
                    if r <= 0.9 { "met" } else { "missed" }
                );
                targets.push(json!({"target": format!("{scenario}: wsdrain CPU per message <= 0.9x cheapest peer"), "measured": r, "met": r <= 0.9}));
            }
            if let Some(h) = of("haproxy") {
                let r = median(
                    w.iter()
                        .zip(h)
                        .map(|(a, b)| a.lat_ms(0.99) / b.lat_ms(0.99))
                        .collect(),
                );
                md += &format!(
                    "Target: wsdrain's p99 delivery latency ≤ HAProxy's (paired by round): {r:.2}× — {}.\n",
                    if r <= 1.0 { "met" } else { "missed" }
                );
                targets.push(json!({"target": format!("{scenario}: wsdrain p99 <= haproxy p99"), "measured": r, "met": r <= 1.0}));
            }
        }
    }
    let doc = json!({
        "settings": {
            "rounds": s.rounds, "clients": s.clients, "bursts": s.bursts,
            "interval_ms": s.interval.as_millis() as u64,
        },
        "results": rows,
        "targets": targets,
        "every_message_once_in_order": clean,
    });
    (md, doc, clean)
}

/// The push scenario's settings: 5,000 clients and 40 bursts on a full run (about 4 s per
/// contender and size), 50 clients and 10 bursts in smoke mode; `WSDRAIN_BENCH_PUSH_CLIENTS`
/// and `WSDRAIN_BENCH_PUSH_BURSTS` change them (experiments).
pub fn push_settings(rounds: usize) -> PushSettings {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let (clients, bursts) = if super::smoke() { (50, 10) } else { (5000, 40) };
    PushSettings {
        rounds,
        clients: env("WSDRAIN_BENCH_PUSH_CLIENTS").map_or(clients, |v| v as usize),
        bursts: env("WSDRAIN_BENCH_PUSH_BURSTS").unwrap_or(bursts),
        interval: Duration::from_millis(100),
    }
}

/// The push sizes to run: all of them, or those `WSDRAIN_BENCH_SCENARIOS` names.
pub fn push_sizes_wanted() -> Vec<(&'static str, usize)> {
    match std::env::var("WSDRAIN_BENCH_SCENARIOS") {
        Ok(only) => PUSH_SIZES
            .iter()
            .copied()
            .filter(|(name, _)| only.split(',').any(|o| o.trim() == *name))
            .collect(),
        Err(_) => PUSH_SIZES.to_vec(),
    }
}
