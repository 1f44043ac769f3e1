//! The accept loop every listener of wsdrain runs: client HTTP, client TCP, admin and
//! webhook.
//!
//! A listener that fails to accept (EMFILE when descriptors run out, ENOBUFS) stays
//! readable, so a naive loop spins at 100 % CPU and floods the log exactly when people
//! read it. Here each failure is counted by the caller's `on_error`, logged at most once
//! a second with a folded count, and followed by a 50 ms back-off. Accepted sockets go
//! to the caller's `accepted`, which spawns the connection's task.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::log_limit::LogLimit;

/// Pause after a failed accept, so a listener that stays readable is no busy loop.
const BACK_OFF: Duration = Duration::from_millis(50);

/// Accepts on `listener` until the process ends. `name` goes into the log line.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    on_error: impl Fn(),
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    let log = LogLimit::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => accepted(stream, peer),
            Err(e) => {
                on_error();
                if let Some(folded) = log.allow() {
                    warn!(listener = name, error = %e, folded, "accept failed");
                }
                tokio::time::sleep(BACK_OFF).await;
            }
        }
    }
}
