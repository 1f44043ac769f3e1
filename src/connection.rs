//! One client connection's life, whatever the mode: read the PROXY header if the
//! balancer sends one, open the app connection, relay, and keep the books.
//!
//! Both front ends use it: `proxy` (HTTP/1.1 + WebSocket) after a 101, and `tcp_mode`
//! right after accept. Flow: a client socket comes in from a listener, [`accept_client`]
//! gives its addresses, [`connect_app`] the app socket, and [`relay_connection`] runs the
//! relay until both sides are done, updating the gauges, the duration histogram and the
//! drain's accounting on the way out.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::debug;

use crate::metrics::{ErrorKind, Metrics, WaitingStage};
use crate::registry::Registration;
use crate::relay::{self, Ending};
use crate::state::{ClientSettings, Sidecar, UpstreamSettings};
use crate::tls::Socket;
use crate::{proxy_protocol, sockets};

/// The two ends of a client connection as the app should see them (with
/// `--accept-proxy-protocol`, `peer` is the address the load balancer reported).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddrs {
    /// The client.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
}

/// Tunes a fresh client socket and reads the PROXY header when
/// `--accept-proxy-protocol` is on. `None` means the header was missing or malformed:
/// the connection is to be dropped (logged and counted here).
pub async fn accept_client(
    settings: &ClientSettings,
    metrics: &Metrics,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Option<ClientAddrs> {
    sockets::tune(stream, settings.tcp_keepalive);
    let local = stream.local_addr().unwrap_or(settings.listen);
    if !settings.accept_proxy_protocol {
        return Some(ClientAddrs { peer, local });
    }
    match proxy_protocol::read_header(stream, settings.handshake_timeout).await {
        Ok(reported) => Some(ClientAddrs {
            peer: reported.unwrap_or(peer),
            local,
        }),
        Err(e) => {
            metrics.error(ErrorKind::ProxyProtocol);
            if matches!(e, proxy_protocol::HeaderError::Shed) {
                metrics.shed_waiting(WaitingStage::ProxyHeader);
            }
            debug!(%peer, error = %e, "rejected a client connection");
            None
        }
    }
}

/// Why a connection to the app could not be opened; each cause is its own error kind.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The app refused the connection (nothing listening, or a reset).
    #[error("unreachable: {0}")]
    Refused(std::io::Error),
    /// The app did not accept within `--connect-timeout`.
    #[error("did not accept the connection in time")]
    Timeout,
    /// The connection was made but writing the PROXY header (`--proxy-protocol`) failed.
    #[error("failed while sending the PROXY header: {0}")]
    ProxyHeader(std::io::Error),
}

impl ConnectError {
    /// The kind counted in `websocket_errors_total`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::Refused(_) => ErrorKind::UpstreamConnect,
            ConnectError::Timeout => ErrorKind::UpstreamConnectTimeout,
            ConnectError::ProxyHeader(_) => ErrorKind::UpstreamProxyHeader,
        }
    }
}

/// Opens a connection to the app for one client: connect timeout, socket options,
/// and the PROXY header when `--proxy-protocol` is set. The error says what failed.
pub async fn connect_app(
    settings: &UpstreamSettings,
    metrics: &Metrics,
    client: ClientAddrs,
) -> Result<TcpStream, ConnectError> {
    let connected = timeout(settings.connect_timeout, TcpStream::connect(settings.addr)).await;
    let up = matches!(connected, Ok(Ok(_)));
    metrics.upstream_up.set(i64::from(up));
    let mut stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::Timeout),
    };
    sockets::tune(&stream, settings.tcp_keepalive);
    if let Some(version) = settings.proxy_protocol {
        let header = proxy_protocol::encode(version, client.peer, client.local);
        stream
            .write_all(&header)
            .await
            .map_err(ConnectError::ProxyHeader)?;
    }
    Ok(stream)
}

/// Runs the relay for one registered connection and keeps the books: the gauges, the
/// duration histogram and the drain's accounting. The client side is plaintext TCP or
/// TLS ([`Socket`]); the app side is always plaintext on loopback.
pub async fn relay_connection(
    sidecar: &Sidecar,
    registration: Registration,
    client: Socket,
    client_early: Bytes,
    app: TcpStream,
    app_early: Bytes,
) {
    let m = &sidecar.metrics;
    m.total.inc();
    m.active.inc();
    let started = Instant::now();
    debug!("connection open");
    let handle = registration.handle.clone();
    let ending = relay::run(
        client,
        client_early,
        Socket::Plain(app),
        app_early,
        &handle,
        &sidecar.relay,
        m,
    )
    .await;
    m.active.dec();
    m.duration.observe(started.elapsed().as_secs_f64());
    match ending {
        Ending::TimedOut => m.error(ErrorKind::CloseTimeout),
        Ending::FinTimedOut => m.error(ErrorKind::FinTimeout),
        Ending::Finished | Ending::Aborted => {}
    }
    // Counted while still registered, then out of the registry (see the drain).
    sidecar.drain.connection_ended(registration);
    debug!(
        ?ending,
        secs = started.elapsed().as_secs_f64(),
        "connection closed"
    );
}
