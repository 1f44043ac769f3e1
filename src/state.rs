//! The sidecar's state: what every task of `wsdrain proxy` shares — its settings, its
//! metrics, the registry of open connections and the drain.
//!
//! Built once from the command line by [`Sidecar::new`] and handed out as an
//! `Arc<Sidecar>` to the listeners (`proxy`, `tcp_mode`), the admin port, rebalancing
//! and the exit logic. The settings are plain data converted from the clap structs
//! here, once: nothing reads the command line at run time, so every part agrees on one
//! drain plan and one deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Mode, ProxyOptions};
use crate::drain::Drain;
use crate::in_flight::InFlight;
use crate::metrics::Metrics;
use crate::proxy_protocol;
use crate::registry::Connections;
use crate::relay::RelaySettings;

/// The proxy's settings as plain data, one group per concern, so a part takes the
/// group it uses and its signature shows what it depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP/WebSocket or plain TCP: decides which front end serves the listener.
    pub mode: Mode,
    /// How client connections are taken in.
    pub client: ClientSettings,
    /// How the app is reached.
    pub upstream: UpstreamSettings,
    /// The admin port.
    pub admin: AdminSettings,
    /// Closing connections for age (`--max-connection-age`), and how fast.
    pub rebalance: RebalanceSettings,
}

/// How client connections are taken in: what the listener, the HTTP parser and the
/// PROXY header reader are bounded by.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where clients connect (`--listen`); the local address when a socket cannot say.
    pub listen: SocketAddr,
    /// Connections held at once (`--max-connections`): the registry refuses beyond it.
    pub max_connections: usize,
    /// A request head larger than this is refused with 431 (`--max-header-size`).
    pub max_header_size: usize,
    /// A request head (and a PROXY header) must arrive within this
    /// (`--handshake-timeout`), so slow heads cannot hold a socket.
    pub handshake_timeout: Duration,
    /// The load balancer sends a PROXY header first (`--accept-proxy-protocol`).
    pub accept_proxy_protocol: bool,
    /// TCP keepalive on client sockets, to find dead peers (`--tcp-keepalive`; zero =
    /// off).
    pub tcp_keepalive: Duration,
}

/// How the app is reached: every part that opens or probes an app connection uses these
/// and nothing else.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The app's address (`--upstream`), on loopback in a pod.
    pub addr: SocketAddr,
    /// A connection to the app must be accepted within this (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// The app must answer a request (or an upgrade) within this (`--response-timeout`).
    pub response_timeout: Duration,
    /// Send the app a PROXY header with the client's address (`--proxy-protocol`).
    pub proxy_protocol: Option<proxy_protocol::Version>,
    /// TCP keepalive on app sockets too (`--tcp-keepalive`; zero = off).
    pub tcp_keepalive: Duration,
}

/// The admin port: probes, metrics and the drain triggers.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it listens (`--admin`).
    pub addr: SocketAddr,
    /// The bearer token that state-changing requests must carry, re-read when it
    /// changes (`--admin-token-file`); `None` = no token asked.
    pub token_file: Option<PathBuf>,
}

/// Closing connections for age, so long-lived sockets spread over new pods.
#[derive(Debug, Clone)]
pub struct RebalanceSettings {
    /// A connection older than this gets a close with a hint (`--max-connection-age`;
    /// zero = off).
    pub max_age: Duration,
    /// Spread of the age limit per connection, so equal-aged sockets do not leave
    /// together (`--max-connection-age-jitter`).
    pub max_age_jitter: Duration,
    /// Age closes per second at most (`--rebalance-rate`).
    pub rate: f64,
}

impl From<&ProxyOptions> for Settings {
    fn from(o: &ProxyOptions) -> Self {
        Settings {
            mode: o.mode,
            client: ClientSettings {
                listen: o.listen,
                max_connections: o.max_connections as usize,
                max_header_size: o.max_header_size,
                handshake_timeout: o.handshake_timeout,
                accept_proxy_protocol: o.accept_proxy_protocol,
                tcp_keepalive: o.tcp_keepalive,
            },
            upstream: UpstreamSettings {
                addr: o.upstream,
                connect_timeout: o.connect_timeout,
                response_timeout: o.response_timeout,
                proxy_protocol: o.proxy_protocol,
                tcp_keepalive: o.tcp_keepalive,
            },
            admin: AdminSettings {
                addr: o.admin,
                token_file: o.admin_token_file.clone(),
            },
            rebalance: RebalanceSettings {
                max_age: o.max_connection_age,
                max_age_jitter: o.max_connection_age_jitter,
                rate: o.rebalance_rate,
            },
        }
    }
}

/// Everything the sidecar's tasks share.
#[derive(Debug)]
pub struct Sidecar {
    /// The proxy's settings.
    pub settings: Settings,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Open connections.
    pub connections: Arc<Connections>,
    /// The drain: its plan, its phase, its one deadline.
    pub drain: Arc<Drain>,
    /// What every relay gets.
    pub relay: RelaySettings,
    /// Whether a `POST /shed` runs: one at a time (see `rebalance::shed`).
    pub shedding: std::sync::atomic::AtomicBool,
    /// Plain HTTP requests in flight, which the drain waits for.
    pub http: Arc<InFlight>,
}

impl Sidecar {
    /// Builds the state from the command line, once.
    pub fn new(opts: &ProxyOptions) -> Arc<Self> {
        let metrics = Metrics::new();
        let connections = Arc::new(Connections::default());
        let drain = Arc::new(Drain::new(
            opts.drain.clone(),
            connections.clone(),
            metrics.clone(),
        ));
        let relay = RelaySettings {
            drain: opts.drain.clone(),
            max_message: opts.max_message_size,
            framed: opts.mode == Mode::Http,
            ping_interval: opts.ping_interval,
            ping_timeout: opts.ping_timeout,
        };
        metrics.max_connections.set(i64::from(opts.max_connections));
        let http = InFlight::new(metrics.http_in_flight.clone());
        Arc::new(Sidecar {
            settings: Settings::from(opts),
            metrics,
            connections,
            drain,
            relay,
            shedding: Default::default(),
            http,
        })
    }
}
