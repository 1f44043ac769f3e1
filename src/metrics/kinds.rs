//! The label values of `websocket_errors_total{kind}` and
//! `wsdrain_upgrades_rejected_total{reason}`: one list each, so every series exists at
//! 0 from the first scrape (alerts on `rate()` need the series before the first
//! error), nobody can count under a misspelt kind, and the README's tables are checked
//! against these lists by a test (`tests/readme_tables.rs`).
//!
//! Flow: every part of the sidecar names what it counts with these; `metrics.rs` turns them
//! into label values.

/// What went wrong, as counted in `websocket_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed request head (hyper answered 400).
    BadRequest,
    /// A request head over `--max-header-size` (431).
    HeaderTooLarge,
    /// A request head not complete within `--handshake-timeout` (slowloris).
    HeaderTimeout,
    /// A missing or malformed PROXY header under `--accept-proxy-protocol`.
    ProxyProtocol,
    /// The app refused a TCP connection.
    UpstreamConnect,
    /// The app did not accept a TCP connection within `--connect-timeout`.
    UpstreamConnectTimeout,
    /// Writing the PROXY header to a new app connection failed (`--proxy-protocol`).
    UpstreamProxyHeader,
    /// The app reset or closed the connection before answering the upgrade.
    UpstreamHandshake,
    /// The app did not answer in time.
    UpstreamTimeout,
    /// A plain HTTP request to the app failed.
    UpstreamHttp,
    /// A frame breaking RFC 6455, relayed anyway for the peer to judge.
    ProtocolViolation,
    /// A message over `--max-message-size`.
    MessageTooBig,
    /// The app went away at a frame boundary: the client got a close with a hint.
    AppGone,
    /// The app went away mid-frame: the client's connection had to be closed.
    AppGoneMidFrame,
    /// The client went away without a close frame.
    ClientGone,
    /// Writing to the client failed (reset).
    ClientReset,
    /// A close handshake did not finish within `--close-timeout`.
    CloseTimeout,
    /// The close handshake was over but the client kept TCP open past the FIN wait.
    FinTimeout,
    /// A client silent `--ping-timeout` after a ping.
    PingTimeout,
    /// The client listener's accept failed (e.g. out of descriptors).
    Accept,
    /// The admin listener's accept failed.
    AdminAccept,
    /// A TLS handshake failed: a malformed ClientHello, no protocol or cipher in
    /// common, a client certificate refused, or an alert from the client.
    TlsHandshake,
    /// A TLS handshake not complete within `--tls-handshake-timeout`.
    TlsHandshakeTimeout,
    /// A TLS handshake dropped to make room under `--tls-max-handshakes`.
    TlsHandshakeShed,
}

impl ErrorKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [ErrorKind; 24] = [
        ErrorKind::BadRequest,
        ErrorKind::HeaderTooLarge,
        ErrorKind::HeaderTimeout,
        ErrorKind::ProxyProtocol,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamConnectTimeout,
        ErrorKind::UpstreamProxyHeader,
        ErrorKind::UpstreamHandshake,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamHttp,
        ErrorKind::ProtocolViolation,
        ErrorKind::MessageTooBig,
        ErrorKind::AppGone,
        ErrorKind::AppGoneMidFrame,
        ErrorKind::ClientGone,
        ErrorKind::ClientReset,
        ErrorKind::CloseTimeout,
        ErrorKind::FinTimeout,
        ErrorKind::PingTimeout,
        ErrorKind::Accept,
        ErrorKind::AdminAccept,
        ErrorKind::TlsHandshake,
        ErrorKind::TlsHandshakeTimeout,
        ErrorKind::TlsHandshakeShed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::HeaderTooLarge => "header_too_large",
            ErrorKind::HeaderTimeout => "header_timeout",
            ErrorKind::ProxyProtocol => "proxy_protocol",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamConnectTimeout => "upstream_connect_timeout",
            ErrorKind::UpstreamProxyHeader => "upstream_proxy_header",
            ErrorKind::UpstreamHandshake => "upstream_handshake",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamHttp => "upstream_http",
            ErrorKind::ProtocolViolation => "protocol_violation",
            ErrorKind::MessageTooBig => "message_too_big",
            ErrorKind::AppGone => "app_gone",
            ErrorKind::AppGoneMidFrame => "app_gone_mid_frame",
            ErrorKind::ClientGone => "client_gone",
            ErrorKind::ClientReset => "client_reset",
            ErrorKind::CloseTimeout => "close_timeout",
            ErrorKind::FinTimeout => "fin_timeout",
            ErrorKind::PingTimeout => "ping_timeout",
            ErrorKind::Accept => "accept",
            ErrorKind::AdminAccept => "admin_accept",
            ErrorKind::TlsHandshake => "tls_handshake",
            ErrorKind::TlsHandshakeTimeout => "tls_handshake_timeout",
            ErrorKind::TlsHandshakeShed => "tls_handshake_shed",
        }
    }
}

/// Why an upgrade (in TCP mode: a connection) did not become a relayed connection, as
/// counted in `wsdrain_upgrades_rejected_total{reason}`. The metric keeps its name in
/// TCP mode so dashboards work unchanged; there it counts refused connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The drain has sealed the registry (503 + `Retry-After`).
    Draining,
    /// `--max-connections` are open (503 + `Retry-After`).
    MaxConnections,
    /// The app could not be reached (502).
    UpstreamUnavailable,
    /// The app did not answer the upgrade in time (504).
    UpstreamTimeout,
    /// The app answered with something other than 101 (passed on unchanged).
    App,
}

impl From<crate::registry::Refused> for Rejection {
    fn from(refused: crate::registry::Refused) -> Self {
        match refused {
            crate::registry::Refused::Sealed => Rejection::Draining,
            crate::registry::Refused::Full => Rejection::MaxConnections,
        }
    }
}

impl Rejection {
    /// Every reason, in the order the README lists them.
    pub const ALL: [Rejection; 5] = [
        Rejection::Draining,
        Rejection::MaxConnections,
        Rejection::UpstreamUnavailable,
        Rejection::UpstreamTimeout,
        Rejection::App,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Draining => "draining",
            Rejection::MaxConnections => "max_connections",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::App => "app",
        }
    }
}

/// A stage where a connection waits for its peer's first bytes, bounded in number by a
/// [`crate::waiting_room::WaitingRoom`], as counted in `wsdrain_waiting_shed_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingStage {
    /// Inside the PROXY header (`--accept-proxy-protocol`).
    ProxyHeader,
    /// Before the first complete request head.
    HttpHead,
}

impl WaitingStage {
    /// Every stage, in the order the README lists them.
    pub const ALL: [WaitingStage; 2] = [WaitingStage::ProxyHeader, WaitingStage::HttpHead];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingStage::ProxyHeader => "proxy_header",
            WaitingStage::HttpHead => "http_head",
        }
    }
}

/// Who sent the first close frame of a connection (or, without one, who ended it), as
/// counted in `websocket_close_total{initiator}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The client closed first.
    Client,
    /// The app closed first.
    App,
    /// wsdrain did (drain, shed, age, limits, liveness).
    Proxy,
}

impl Initiator {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::App => "app",
            Initiator::Proxy => "proxy",
        }
    }
}
