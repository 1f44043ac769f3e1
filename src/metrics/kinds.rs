//! The label values of `websocket_errors_total{kind}` and
//! `wsdrain_upgrades_rejected_total{reason}`: one list each, so every series exists at
//! 0 from the first scrape (alerts on `rate()` need the series before the first
//! error), nobody can count under a misspelt kind, and the README's tables are checked
//! against these lists by a test (`tests/cli.rs`).

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
    /// The app did not accept a TCP connection.
    UpstreamConnect,
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
    /// A client silent `--ping-timeout` after a ping.
    PingTimeout,
    /// The client listener's accept failed (e.g. out of descriptors).
    Accept,
    /// The admin listener's accept failed.
    AdminAccept,
}

impl ErrorKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::BadRequest,
        ErrorKind::HeaderTooLarge,
        ErrorKind::HeaderTimeout,
        ErrorKind::ProxyProtocol,
        ErrorKind::UpstreamConnect,
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
        ErrorKind::PingTimeout,
        ErrorKind::Accept,
        ErrorKind::AdminAccept,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::HeaderTooLarge => "header_too_large",
            ErrorKind::HeaderTimeout => "header_timeout",
            ErrorKind::ProxyProtocol => "proxy_protocol",
            ErrorKind::UpstreamConnect => "upstream_connect",
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
            ErrorKind::PingTimeout => "ping_timeout",
            ErrorKind::Accept => "accept",
            ErrorKind::AdminAccept => "admin_accept",
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
