//! A bounded, loopback-only driver for counting what one echo round trip costs the proxy
//! (instructions under callgrind, syscalls under `strace -c`, context switches from
//! `/proc`). Wall-clock rates on a shared machine say little; counts per round trip
//! do not depend on the load, so `benches/profile.sh count` uses this driver to decide
//! experiments (docs/performance.md, "Counting per round trip").
//!
//! ```text
//! rt_driver echo PORT                       # WebSocket echo app on 127.0.0.1:PORT
//! rt_driver load PORT CONNS ROUND_TRIPS SIZE [--gate]
//! ```
//!
//! `load` opens CONNS WebSockets to 127.0.0.1:PORT, does one warm-up round trip on each,
//! prints `warm`, and with `--gate` waits for a line on stdin (so the caller can zero its
//! counters), then does ROUND_TRIPS round trips of SIZE-byte binary messages spread over
//! the connections, prints `done N round trips in S s` and exits. Every wait is bounded.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// No single step of the driver may take longer than this.
const STEP: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("echo") => {
            let port: u16 = arg(&args, 1, "PORT")?;
            rt.block_on(echo(port))
        }
        Some("load") => {
            let port: u16 = arg(&args, 1, "PORT")?;
            let conns: usize = arg(&args, 2, "CONNS")?;
            let trips: usize = arg(&args, 3, "ROUND_TRIPS")?;
            let size: usize = arg(&args, 4, "SIZE")?;
            if conns == 0 || conns > 5000 || trips > 10_000_000 || size > (1 << 24) {
                bail!("CONNS must be 1..=5000, ROUND_TRIPS at most 10^7, SIZE at most 16 MiB");
            }
            let gate = args.iter().any(|a| a == "--gate");
            rt.block_on(load(port, conns, trips, size, gate))
        }
        _ => bail!(
            "usage: rt_driver echo PORT | rt_driver load PORT CONNS ROUND_TRIPS SIZE [--gate]"
        ),
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> anyhow::Result<T> {
    args.get(i)
        .with_context(|| format!("missing {name}"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("{name} is not a valid number"))
}

async fn echo(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_binary() || msg.is_text()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn load(
    port: u16,
    conns: usize,
    trips: usize,
    size: usize,
    gate: bool,
) -> anyhow::Result<()> {
    let url = format!("ws://127.0.0.1:{port}/");
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::client_async(&url, stream))
            .await
            .context("handshake timed out")??;
        sockets.push(ws);
    }
    let payload = vec![0x5a_u8; size];
    for ws in &mut sockets {
        round_trip(ws, &payload).await?;
    }
    println!("warm");
    if gate {
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)
        })
        .await??;
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let share = trips / conns + usize::from(i < trips % conns);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                round_trip(&mut ws, &payload).await?;
            }
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "done {trips} round trips in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn round_trip(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    payload: &[u8],
) -> anyhow::Result<()> {
    ws.send(Message::Binary(payload.to_vec().into())).await?;
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Err(_) => bail!("no echo within {STEP:?}"),
            Ok(None) => bail!("connection closed before the echo"),
            Ok(Some(msg)) => {
                let msg = msg?;
                if msg.is_binary() {
                    if msg.len() != payload.len() {
                        bail!("echo of {} bytes for {}", msg.len(), payload.len());
                    }
                    return Ok(());
                }
            }
        }
    }
}
