//! `wsdrain demo`: the reconnect storm and its cure, on one machine, in under a minute.
//!
//! It starts an embedded echo app, two "pods" (real `wsdrain proxy` child processes of
//! this same binary: the one going away and its neighbour), and a few thousand clients
//! that reconnect the way browsers do — at once, to the neighbour, when their socket
//! closes. It runs the same clients through three pod terminations:
//! 1. a staggered drain (`POST /drain`), showing its progress while it runs;
//! 2. an abrupt stop (the pod's proxy killed, as when an app exits without wsdrain);
//! 3. a staggered drain again, with clients that honour the reconnect hint (wait
//!    `reconnect_after_ms` before reconnecting, as `clients/` shows how to);
//!
//! and prints, per second, how many reconnects the neighbour received in each case.
//! With `--sse` it runs Server-Sent Events clients instead (`sse`).
//!
//! Flow: flags in; child `wsdrain proxy` processes, an embedded app and clients started
//! here; a table of reconnects per second out on stdout.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::DemoOptions;

mod sse;

/// The pods' `--reconnect-jitter` (wsdrain's default): hints lie in `[0, this]`, so
/// clients that honour them arrive over the drain window plus this.
const RECONNECT_JITTER: Duration = Duration::from_secs(5);

/// One "pod": a wsdrain proxy child process.
struct Pod {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

impl Pod {
    async fn start(app: SocketAddr, window: Duration) -> anyhow::Result<Pod> {
        let (listen, admin) = (free_addr().await?, free_addr().await?);
        let child = Command::new(std::env::current_exe().context("locating the wsdrain binary")?)
            .arg("proxy")
            .args([
                "--listen",
                &listen.to_string(),
                "--upstream",
                &app.to_string(),
            ])
            .args(["--admin", &admin.to_string(), "--log-level", "error"])
            .args(["--drain-delay", "1s", "--close-timeout", "3s"])
            .args(["--drain-window", &format!("{}ms", window.as_millis())])
            .args([
                "--reconnect-jitter",
                &format!("{}ms", RECONNECT_JITTER.as_millis()),
            ])
            .args(["--max-connections", "50000"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting a wsdrain proxy")?;
        let pod = Pod {
            child,
            listen,
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(admin).await.is_err() {
            if Instant::now() > deadline {
                bail!("the demo proxy did not start on {admin}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(pod)
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.listen)
    }
}

/// The embedded app: echoes every message.
async fn start_app() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// What the clients saw during one pod termination.
#[derive(Default)]
struct Run {
    /// When each client reconnected to the neighbour.
    reconnects: Vec<Instant>,
    /// Close codes seen (0 = the socket died without a close frame).
    codes: Vec<u16>,
}

/// The hint in a close reason `{"reconnect_after_ms":N}`, if it carries one.
fn hint_of(reason: &str) -> Option<Duration> {
    let doc: serde_json::Value = serde_json::from_str(reason).ok()?;
    doc.get("reconnect_after_ms")?
        .as_u64()
        .map(Duration::from_millis)
}

/// A client: connected to `first`; when that ends, records how, reconnects to `second`
/// (at once, as browsers do, or after the close's reconnect hint when `honour`), and
/// reports.
async fn client(
    first: String,
    second: String,
    run: Arc<Mutex<Run>>,
    gate: Arc<Semaphore>,
    honour: bool,
) -> bool {
    let permit = gate.acquire().await;
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&first).await else {
        return false;
    };
    drop(permit);
    let mut code = 0;
    let mut back_at = None;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(frame)) => {
                code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                let hint = frame.as_ref().and_then(|f| hint_of(&f.reason));
                back_at = hint.map(|h| tokio::time::Instant::now() + h);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(ws); // the old connection is over: release its socket before waiting
    if let (true, Some(at)) = (honour, back_at) {
        tokio::time::sleep_until(at).await;
    }
    let reconnected = tokio_tungstenite::connect_async(&second).await.is_ok();
    let mut run = run.lock().unwrap_or_else(|p| p.into_inner());
    run.codes.push(code);
    if reconnected {
        run.reconnects.push(Instant::now());
    }
    true
}

async fn admin_get(admin: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: demo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Connects `n` clients to `pod`, each moving to `neighbour` when closed (after the
/// reconnect hint when `honour`).
async fn connect_all(
    n: u32,
    pod: &Pod,
    neighbour: &Pod,
    run: &Arc<Mutex<Run>>,
    honour: bool,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<bool>>> {
    let gate = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(client(
                pod.url(),
                neighbour.url(),
                run.clone(),
                gate.clone(),
                honour,
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = admin_get(pod.admin, "GET", "/drain").await?;
        let open = serde_json::from_str::<serde_json::Value>(&body)?["open"]
            .as_u64()
            .unwrap_or(0);
        if open >= u64::from(n) {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            bail!("only {open} of {n} clients connected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the demo and prints the comparison.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    crate::sockets::raise_fd_limit();
    let n = opts.clients;
    if opts.sse {
        return sse::run(n, opts.drain_window).await;
    }
    let app = start_app().await?;
    println!("wsdrain demo: {n} clients, an echo app, a pod going away and its neighbour.\n");

    // 1. Staggered drain.
    let pod = Pod::start(app, opts.drain_window).await?;
    let neighbour = Pod::start(app, opts.drain_window).await?;
    let staggered = Arc::new(Mutex::new(Run::default()));
    let tasks = connect_all(n, &pod, &neighbour, &staggered, false).await?;
    println!(
        "1/3 staggered drain: {n} clients on the pod; POST /drain (delay 1s, window {})",
        humantime::format_duration(opts.drain_window)
    );
    let t_stagger = Instant::now();
    drain_and_follow(&pod).await?;
    for t in tasks {
        let _ = t.await;
    }
    drop(pod);

    // 2. Abrupt stop of the same clients.
    let pod = Pod::start(app, opts.drain_window).await?;
    let abrupt = Arc::new(Mutex::new(Run::default()));
    let tasks = connect_all(n, &pod, &neighbour, &abrupt, false).await?;
    println!("\n2/3 abrupt stop: {n} clients on a fresh pod; its process is killed");
    let t_abrupt = Instant::now();
    drop(pod);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }

    // 3. Staggered drain again, with clients that wait for the hint.
    let pod = Pod::start(app, opts.drain_window).await?;
    let honoured = Arc::new(Mutex::new(Run::default()));
    let tasks = connect_all(n, &pod, &neighbour, &honoured, true).await?;
    println!(
        "\n3/3 staggered drain, clients honour the hint: {n} clients; each waits its \
         reconnect_after_ms (0-{} ms) before reconnecting",
        RECONNECT_JITTER.as_millis()
    );
    let t_honour = Instant::now();
    drain_and_follow(&pod).await?;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    drop(pod);

    // The table: reconnects per second at the neighbour.
    let take =
        |run: &Arc<Mutex<Run>>| std::mem::take(&mut *run.lock().unwrap_or_else(|p| p.into_inner()));
    let (s, a, h) = (take(&staggered), take(&abrupt), take(&honoured));
    let sb = per_second(&s.reconnects, t_stagger);
    let ab = per_second(&a.reconnects, t_abrupt);
    let hb = per_second(&h.reconnects, t_honour);
    println!("\nreconnects per second arriving at the neighbour pod:");
    println!("  second | staggered drain | abrupt stop | clients honour the hint");
    for i in 0..sb.len().max(ab.len()).max(hb.len()) {
        let cell = |b: &[u32]| b.get(i).map(|v| v.to_string()).unwrap_or_default();
        println!(
            "  {i:>6} | {:>15} | {:>11} | {:>23}",
            cell(&sb),
            cell(&ab),
            cell(&hb)
        );
    }
    let peak = |b: &[u32]| b.iter().copied().max().unwrap_or(0);
    let share = |codes: &[u16], code: u16| codes.iter().filter(|c| **c == code).count();
    println!(
        "\n  peak/s | {:>15} | {:>11} | {:>23}",
        peak(&sb),
        peak(&ab),
        peak(&hb)
    );
    println!(
        "  closes | {:>6} got 1012 | {:>4} no close frame | {:>14} got 1012",
        share(&s.codes, 1012),
        share(&a.codes, 0) + share(&a.codes, 1006),
        share(&h.codes, 1012)
    );
    println!(
        "\nThe staggered drain sent every client a close frame (1012 + reconnect hint) and spread\n\
         the reconnects over the window; the abrupt stop sent them all to the neighbour at once.\n\
         Clients that wait for the hint spread them over the window plus the jitter ({}), so the\n\
         neighbour sees a lower, still even rate.",
        humantime::format_duration(RECONNECT_JITTER)
    );
    Ok(())
}

/// How many of `times` fell into each second after `t0`.
fn per_second(times: &[Instant], t0: Instant) -> Vec<u32> {
    let mut buckets = Vec::<u32>::new();
    for t in times {
        let sec = t.saturating_duration_since(t0).as_secs() as usize;
        if buckets.len() <= sec {
            buckets.resize(sec + 1, 0);
        }
        buckets[sec] += 1;
    }
    buckets
}

/// Starts a drain of `pod` and prints its progress each second until it is done.
async fn drain_and_follow(pod: &Pod) -> anyhow::Result<()> {
    let t_stagger = Instant::now();
    admin_get(pod.admin, "POST", "/drain").await?;
    loop {
        let body = admin_get(pod.admin, "GET", "/drain").await?;
        let s: serde_json::Value = serde_json::from_str(&body)?;
        println!(
            "    {:>5.1}s  phase {:<10} open {:>5}  closed {:>5}",
            t_stagger.elapsed().as_secs_f64(),
            s["phase"].as_str().unwrap_or("?"),
            s["open"].as_u64().unwrap_or(0),
            s["closed"].as_u64().unwrap_or(0)
        );
        if s["phase"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Ok(())
}
