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

/// The proxy's settings as plain data (see `cli::ProxyOptions` for what each means).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--mode`.
    pub mode: Mode,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--upstream`.
    pub upstream: SocketAddr,
    /// `--admin`.
    pub admin: SocketAddr,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-header-size`.
    pub max_header_size: usize,
    /// `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `--response-timeout`.
    pub response_timeout: Duration,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
    /// `--proxy-protocol`.
    pub proxy_protocol: Option<proxy_protocol::Version>,
    /// `--accept-proxy-protocol`.
    pub accept_proxy_protocol: bool,
    /// `--max-connection-age`; zero = off.
    pub max_connection_age: Duration,
    /// `--max-connection-age-jitter`.
    pub max_connection_age_jitter: Duration,
    /// `--rebalance-rate`.
    pub rebalance_rate: f64,
    /// `--tcp-keepalive`; zero = off.
    pub tcp_keepalive: Duration,
}

impl From<&ProxyOptions> for Settings {
    fn from(o: &ProxyOptions) -> Self {
        Settings {
            mode: o.mode,
            listen: o.listen,
            upstream: o.upstream,
            admin: o.admin,
            max_connections: o.max_connections as usize,
            max_header_size: o.max_header_size,
            handshake_timeout: o.handshake_timeout,
            response_timeout: o.response_timeout,
            connect_timeout: o.connect_timeout,
            admin_token_file: o.admin_token_file.clone(),
            proxy_protocol: o.proxy_protocol,
            accept_proxy_protocol: o.accept_proxy_protocol,
            max_connection_age: o.max_connection_age,
            max_connection_age_jitter: o.max_connection_age_jitter,
            rebalance_rate: o.rebalance_rate,
            tcp_keepalive: o.tcp_keepalive,
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
