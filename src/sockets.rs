//! Socket options, set with socket2 the way a busy sidecar needs them.
//!
//! A rolling update reconnects thousands of clients within seconds, so the accept
//! backlog is raised well above the default; `SO_REUSEADDR` lets a restarted sidecar
//! bind at once while old connections linger in TIME_WAIT. Relayed streams get
//! `TCP_NODELAY` (frames are small and latency-bound) and TCP keepalive, so a peer
//! that vanished without a FIN is noticed even when nobody pings. Keepalive never
//! fires while data waits to be acknowledged (a ping queued behind a large frame, a
//! client gone mid-download), so they also get `TCP_USER_TIMEOUT` of twice the
//! keepalive time: unacknowledged data that long means the peer is dead.
//!
//! Flow: addresses in, listeners out (`sidecar.rs`, the webhook); streams in, tuned in
//! place (`connection.rs`, the plain-HTTP retry).

use std::net::SocketAddr;

use anyhow::Context;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

/// Accept backlog for the listening sockets.
const BACKLOG: i32 = 4096;

/// Binds a non-blocking TCP listener on `addr`.
pub fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(|| format!("creating the {what} socket"))?;
    socket.set_reuse_address(true)?;
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

/// Sets `TCP_NODELAY` and, unless `keepalive` is zero, TCP keepalive probes after
/// `keepalive` of silence (then every `keepalive / 3`) and `TCP_USER_TIMEOUT` of
/// `2 × keepalive` (the kernel drops a connection whose sent data stays
/// unacknowledged that long, and it also bounds the keepalive probing). Failures are
/// ignored: these are optimisations, and the connection works without them.
pub fn tune(stream: &TcpStream, keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    if !keepalive.is_zero() {
        let ka = TcpKeepalive::new()
            .with_time(keepalive)
            .with_interval((keepalive / 3).max(Duration::from_secs(1)));
        let sock = SockRef::from(stream);
        let _ = sock.set_tcp_keepalive(&ka);
        let _ = sock.set_tcp_user_timeout(Some(keepalive * 2));
    }
}

/// Raises the soft open-file limit to the hard limit (what Go and nginx do too): every
/// WebSocket costs two descriptors and the default soft limit is often 1024. Returns
/// the soft limit in force afterwards.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}
