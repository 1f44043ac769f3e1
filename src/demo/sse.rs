//! `wsdrain demo --sse`: the same storm and cure for Server-Sent Events, with clients
//! that behave as a browser's `EventSource` does — they honour the `retry:` a stream
//! gives and otherwise come back after the browsers' default of 3 s.
//!
//! Two pod terminations of the same clients: a staggered drain (each stream ends at an
//! event boundary with `retry: <hint>`), and an abrupt stop (the pod's proxy killed:
//! every stream breaks at once and every client returns 3 s later, together). It prints
//! how many reconnects per second the neighbour received in each case.
//!
//! Flow: `demo::run` hands in the pods' app, the neighbour and the count; an embedded
//! event-stream app and the clients run here; a table goes out on stdout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{Pod, admin_get, drain_and_follow, per_second};

/// What an `EventSource` waits before reconnecting when the stream gave no `retry:`.
const BROWSER_DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// An event-stream app: every connection gets `id: N` / `data: tick N` each 500 ms.
pub async fn start_app() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut head = [0u8; 2048];
                if stream.read(&mut head).await.is_err() {
                    return;
                }
                let start = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(start).await.is_err() {
                    return;
                }
                for n in 1u64.. {
                    let event = format!("id: {n}\ndata: tick {n}\n\n");
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    });
    Ok(addr)
}

/// One `EventSource`-like client: streams from `first` (HTTP/1.0, so the body ends with
/// the connection); when the stream ends, waits the last `retry:` it saw (or the
/// browsers' default) and reconnects to `second`. Records when it got there.
async fn client(
    first: SocketAddr,
    second: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire().await;
    let Ok(mut s) = TcpStream::connect(first).await else {
        return;
    };
    if s.write_all(b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    drop(permit);
    let mut retry = BROWSER_DEFAULT_RETRY;
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    // Read to the end of the stream, keeping the last bytes to find a `retry:` in.
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if let Some(ms) = last_retry(&tail) {
            retry = Duration::from_millis(ms);
        }
        let keep = tail.len().saturating_sub(64);
        tail.drain(..keep);
    }
    drop(s);
    tokio::time::sleep(retry).await;
    if TcpStream::connect(second).await.is_ok() {
        arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }
}

/// The value of the last complete `retry:` line in `bytes`.
fn last_retry(bytes: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(bytes);
    let at = text.rfind("retry: ")?;
    let line = text[at + 7..]
        .split('\n')
        .next()
        .filter(|_| text[at..].contains('\n'))?;
    line.trim().parse().ok()
}

/// Connects `n` clients to `pod` and waits until its registry counts them.
async fn connect_all(
    n: u32,
    pod: &Pod,
    neighbour: &Pod,
    arrivals: &Arc<Mutex<Vec<Instant>>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let gate = Arc::new(Semaphore::new(64));
    let tasks = (0..n)
        .map(|_| {
            tokio::spawn(client(
                pod.listen,
                neighbour.listen,
                arrivals.clone(),
                gate.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = admin_get(pod.admin, "GET", "/drain").await?;
        let open = serde_json::from_str::<serde_json::Value>(&body)?["sse_open"]
            .as_u64()
            .unwrap_or(0);
        if open >= u64::from(n) {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {open} of {n} SSE clients connected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the SSE comparison: a staggered drain, then an abrupt stop.
pub async fn run(n: u32, window: Duration) -> anyhow::Result<()> {
    let app = start_app().await?;
    println!(
        "wsdrain demo --sse: {n} EventSource-like clients, an event-stream app, a pod going away and its neighbour.\n"
    );
    let neighbour = Pod::start(app, window).await?;

    let pod = Pod::start(app, window).await?;
    let staggered = Arc::new(Mutex::new(Vec::new()));
    let tasks = connect_all(n, &pod, &neighbour, &staggered).await?;
    println!(
        "1/2 staggered drain: {n} streams on the pod; POST /drain (delay 1s, window {})",
        humantime::format_duration(window)
    );
    let t_stagger = Instant::now();
    drain_and_follow(&pod).await?;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    drop(pod);

    let pod = Pod::start(app, window).await?;
    let abrupt = Arc::new(Mutex::new(Vec::new()));
    let tasks = connect_all(n, &pod, &neighbour, &abrupt).await?;
    println!("\n2/2 abrupt stop: {n} streams on a fresh pod; its process is killed");
    let t_abrupt = Instant::now();
    drop(pod);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }

    let take = |v: &Arc<Mutex<Vec<Instant>>>| {
        std::mem::take(&mut *v.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let (s, a) = (take(&staggered), take(&abrupt));
    let sb = per_second(&s, t_stagger);
    let ab = per_second(&a, t_abrupt);
    println!("\nEventSource reconnects per second arriving at the neighbour pod:");
    println!("  second | staggered drain (retry: hint) | abrupt stop (browser default 3 s)");
    for i in 0..sb.len().max(ab.len()) {
        let cell = |b: &[u32]| b.get(i).map(|v| v.to_string()).unwrap_or_default();
        println!("  {i:>6} | {:>29} | {:>34}", cell(&sb), cell(&ab));
    }
    let peak = |b: &[u32]| b.iter().copied().max().unwrap_or(0);
    println!("\n  peak/s | {:>29} | {:>34}", peak(&sb), peak(&ab));
    println!(
        "\nThe drain ended each stream at an event boundary with `retry: <hint>`, staggered over\n\
         the window: EventSource clients came back evenly, with no client change. Killed, every\n\
         stream broke at once and every client came back together after the default retry."
    );
    Ok(())
}
