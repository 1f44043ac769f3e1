//! The sidecar's client-facing side: accepts connections, serves HTTP/1.1 with hyper,
//! and sends each request down one of two paths — a WebSocket upgrade
//! ([`upgrade`]) or a plain HTTP request ([`forward`]).

mod forward;
mod headers;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{Instrument, debug, info_span, warn};

use crate::body::Body;
use crate::cli::{Mode, ProxyOptions};
use crate::connections::Connections;
use crate::connections::Registration;
use crate::drain::Drain;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::relay::{self, Ending, RelaySettings};
use crate::{proxy_protocol, sockets};

/// Everything the request handlers share.
pub struct Shared {
    /// The proxy flags.
    pub opts: ProxyOptions,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Open WebSocket connections.
    pub connections: Arc<Connections>,
    /// Drain state.
    pub drain: Arc<Drain>,
    /// Settings every relay gets.
    pub relay: RelaySettings,
    client: Client<HttpConnector, Body>,
    server: http1::Builder,
}

impl Shared {
    /// Builds the shared state from the flags.
    pub fn new(opts: ProxyOptions, metrics: Metrics, drain: Arc<Drain>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(opts.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .header_read_timeout(opts.handshake_timeout)
            .max_buf_size(opts.max_header_size)
            .preserve_header_case(true)
            .keep_alive(true);
        let relay = RelaySettings {
            close_code: opts.drain.close_code,
            close_timeout: opts.drain.close_timeout,
            max_message: opts.max_message_size,
            reconnect_jitter: opts.drain.reconnect_jitter,
            framed: opts.mode == Mode::Http,
            ping_interval: opts.ping_interval,
            ping_timeout: opts.ping_timeout,
        };
        Arc::new(Shared {
            opts,
            metrics,
            connections: Arc::new(Connections::default()),
            drain,
            relay,
            client,
            server,
        })
    }
}

/// The two ends of a client connection as the app should see them (with
/// `--accept-proxy-protocol`, `peer` is the address the load balancer reported).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddrs {
    /// The client.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
}

impl Shared {
    /// Reads the PROXY header when `--accept-proxy-protocol` is on. `None` means the
    /// header was missing or malformed: the connection is to be dropped (logged and
    /// counted here).
    pub async fn accept_client(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Option<ClientAddrs> {
        sockets::tune(stream, self.opts.tcp_keepalive);
        let local = stream.local_addr().unwrap_or(self.opts.listen);
        if !self.opts.accept_proxy_protocol {
            return Some(ClientAddrs { peer, local });
        }
        match proxy_protocol::read_header(stream, self.opts.handshake_timeout).await {
            Ok(reported) => Some(ClientAddrs {
                peer: reported.unwrap_or(peer),
                local,
            }),
            Err(e) => {
                self.metrics.error("proxy_protocol");
                debug!(%peer, error = %e, "rejected a client connection");
                None
            }
        }
    }

    /// Opens a connection to the app for one client: connect timeout, socket options,
    /// and the PROXY header when `--proxy-protocol` is set. The error says what failed.
    pub async fn connect_app(&self, client: ClientAddrs) -> Result<TcpStream, String> {
        let upstream = self.opts.upstream;
        let connected = timeout(self.opts.connect_timeout, TcpStream::connect(upstream)).await;
        let up = matches!(connected, Ok(Ok(_)));
        self.metrics.upstream_up.set(i64::from(up));
        let mut stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("unreachable: {e}")),
            Err(_) => return Err("did not accept the connection in time".into()),
        };
        sockets::tune(&stream, self.opts.tcp_keepalive);
        if let Some(version) = self.opts.proxy_protocol {
            let header = proxy_protocol::encode(version, client.peer, client.local);
            if let Err(e) = stream.write_all(&header).await {
                return Err(format!("failed while sending the PROXY header: {e}"));
            }
        }
        Ok(stream)
    }
}

/// Accept failures of the client listener, in both modes (logged once a second).
pub(crate) static ACCEPT_LOG: LogLimit = LogLimit::new();

/// Accepts client connections until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((mut stream, peer)) => {
                let id = shared.connections.next_id();
                let span = info_span!("conn", id, %peer);
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        let Some(client) = shared.accept_client(&mut stream, peer).await else {
                            return;
                        };
                        let service = service_fn({
                            let shared = shared.clone();
                            move |req| route(shared.clone(), req, client, id)
                        });
                        if let Err(e) = shared
                            .server
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                        {
                            if let Some(kind) = rejection_kind(&e) {
                                shared.metrics.error(kind);
                            }
                            debug!(error = %e, "client connection ended with an error");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // EMFILE and friends: say so at most once a second, and back off
                // instead of spinning on a listener that stays readable.
                shared.metrics.error("accept");
                if let Some(folded) = ACCEPT_LOG.allow() {
                    warn!(error = %e, folded, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client: ClientAddrs,
    id: u64,
) -> Result<Response<Body>, Infallible> {
    if headers::is_websocket_upgrade(&req) {
        Ok(upgrade::handle(shared, req, client, id).await)
    } else {
        Ok(forward::handle(shared, req, client.peer).await)
    }
}

/// The error kind for a request hyper refused before it reached a handler (it answers
/// 400 or 431 itself, or closes a slow head); `None` for a client that simply left.
fn rejection_kind(e: &hyper::Error) -> Option<&'static str> {
    if e.is_timeout() {
        Some("header_timeout")
    } else if e.is_parse_too_large() {
        Some("header_too_large")
    } else if e.is_parse() || e.is_parse_status() {
        Some("bad_request")
    } else {
        None
    }
}

/// Runs the relay for one registered connection and keeps the books: the gauges, the
/// duration histogram and the drain's accounting. Shared by the WebSocket and TCP modes.
pub async fn relay_connection(
    shared: &Shared,
    registration: Registration,
    client: TcpStream,
    client_early: Bytes,
    app: TcpStream,
    app_early: Bytes,
) {
    let m = &shared.metrics;
    m.total.inc();
    m.active.inc();
    let started = Instant::now();
    debug!("connection open");
    let handle = registration.handle.clone();
    let ending = relay::run(
        client,
        client_early,
        app,
        app_early,
        &handle,
        &shared.relay,
        m,
    )
    .await;
    m.active.dec();
    m.duration.observe(started.elapsed().as_secs_f64());
    if ending == Ending::TimedOut {
        m.error("close_timeout");
    }
    drop(registration);
    shared
        .drain
        .connection_ended(handle.command(), shared.connections.len(), m);
    debug!(
        ?ending,
        secs = started.elapsed().as_secs_f64(),
        "connection closed"
    );
}
