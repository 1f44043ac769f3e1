//! Listening sockets, set up with socket2 the way a busy sidecar needs them.
//!
//! A rolling update reconnects thousands of clients within seconds, so the accept
//! backlog is raised well above the default; `SO_REUSEADDR` lets a restarted sidecar
//! bind at once while old connections linger in TIME_WAIT.
//!
//! TCP keepalive is switched on at the listener, so every accepted socket inherits it
//! (Linux copies `SO_KEEPALIVE` and the probe timings to accepted sockets): a client that
//! vanished without FIN or RST (node gone, NAT entry dropped) is noticed within
//! [`KEEPALIVE_IDLE`] + [`KEEPALIVE_RETRIES`] × [`KEEPALIVE_INTERVAL`] of silence
//! instead of being held, and counted in `websocket_connections_active`, forever.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::TcpListener;

/// Accept backlog for the listening sockets.
const BACKLOG: i32 = 4096;

/// Silence before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered probes before the connection is dropped.
pub const KEEPALIVE_RETRIES: u32 = 4;

/// Binds a non-blocking TCP listener on `addr`.
pub fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(|| format!("creating the {what} socket"))?;
    socket.set_reuse_address(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket
        .set_tcp_keepalive(&keepalive)
        .with_context(|| format!("enabling TCP keepalive on the {what} socket"))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding the {what} address {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("listening on the {what} address {addr}"))?;
    TcpListener::from_std(socket.into()).with_context(|| format!("registering the {what} socket"))
}
