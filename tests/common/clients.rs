//! Drain-test clients: connect, send sequence-numbered messages, record the close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use super::Proxy;

/// What one client lived through.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// Messages sent before the close frame arrived.
    pub sent: Vec<String>,
    /// Close code and reason received.
    pub close: Option<(u16, String)>,
    /// When the close frame arrived.
    pub close_at: Option<Instant>,
    /// A read error (reset, protocol error) instead of a clean close.
    pub error: Option<String>,
}

/// Connects, then sends `id-seq` every `every` until a close frame arrives; returns
/// once the connection has ended.
async fn client(
    url: String,
    id: usize,
    every: Duration,
    ready: Arc<tokio::sync::Barrier>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let (mut ws, _) = match connect_async(url).await {
        Ok(pair) => pair,
        Err(e) => {
            report.error = Some(format!("connect: {e}"));
            ready.wait().await;
            return report;
        }
    };
    ready.wait().await;
    // Random phase so 2,000 clients do not send in lockstep.
    let phase = Duration::from_millis((id as u64 * 7919) % every.as_millis().max(1) as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick(), if report.close.is_none() => {
                let text = format!("{id}-{seq}");
                seq += 1;
                if ws.send(Message::text(text.clone())).await.is_ok() {
                    report.sent.push(text);
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => {
                    report.close_at = Some(Instant::now());
                    report.close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((0, String::new())));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if report.close.is_none() {
                        report.error = Some(e.to_string());
                    }
                    break;
                }
                None => break,
            }
        }
    }
    report
}

pub fn hint_of(reason: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(reason).ok()?;
    v.get("reconnect_after_ms")?.as_u64()
}

pub async fn connect_clients(
    proxy: &Proxy,
    n: usize,
    every: Duration,
) -> Vec<tokio::task::JoinHandle<ClientReport>> {
    let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        tasks.push(tokio::spawn(client(
            proxy.url("/"),
            id,
            every,
            ready.clone(),
        )));
        if id % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .expect("clients connected in time");
    tasks
}

pub async fn collect(
    tasks: Vec<tokio::task::JoinHandle<ClientReport>>,
    within: Duration,
) -> Vec<ClientReport> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(within, t)
                .await
                .expect("client ended in time")
                .expect("client task"),
        );
    }
    out
}
