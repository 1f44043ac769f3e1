//! The WebSocket upgrade path: forward the handshake to the app, hand the app's answer
//! back as it is, and after a 101 that switches to WebSocket start the relay on the raw
//! sockets.
//!
//! The handshake is relayed, not re-done: subprotocols, extensions (permessage-deflate),
//! cookies and auth headers stay end-to-end, and a 401 or 404 from the app reaches the
//! client untouched. Limits are checked before the app is contacted. The request is
//! forwarded as strictly as a plain one: origin form, hop-by-hop headers removed, and
//! the app offered `websocket` alone (`headers::prepare_upgrade`). A 101 that does not
//! switch to `websocket` gets the client a 502: only WebSocket bytes are ever framed.
//!
//! Flow: an upgrade request in from the HTTP front end; registered, sent to the app on a
//! connection of its own; the app's answer back out; after a 101 the two raw sockets go
//! to [`crate::connection::relay_connection`] (the client's with its TLS session, over TLS).

use std::sync::Arc;

use bytes::Bytes;
use hyper::client::conn::http1 as client_http1;
use hyper::header::{CONNECTION, HeaderValue, RETRY_AFTER, UPGRADE};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{Instrument, Span, debug, warn};

use super::headers;
use crate::body::{Body, empty, plain};
use crate::connection::{ClientAddrs, connect_app, relay_connection};
use crate::log_limit::LogLimit;
use crate::metrics::{ErrorKind, Rejection};
use crate::registry::{Refused, Registration};
use crate::state::Sidecar;
use crate::tls::{self, Socket};

/// Handles one upgrade request from `peer`.
pub async fn handle(
    sidecar: Arc<Sidecar>,
    mut req: Request<Incoming>,
    client: ClientAddrs,
    id: u64,
) -> Response<Body> {
    let m = &sidecar.metrics;
    // Registered before the app is contacted, under the registry's lock: refused here
    // once the drain has sealed it, else in the drain's list.
    let registration = match sidecar
        .connections
        .register(id, sidecar.settings.client.max_connections)
    {
        Ok(registration) => registration,
        Err(Refused::Sealed) => {
            m.rejected(Rejection::Draining);
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "wsdrain: this pod is draining; reconnect to another one",
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        Err(Refused::Full) => {
            m.rejected(Rejection::MaxConnections);
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "wsdrain: connection limit ({}) reached",
                    sidecar.settings.client.max_connections
                ),
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
    };
    let client_upgrade = hyper::upgrade::on(&mut req);

    let upstream = sidecar.settings.upstream.addr;
    let stream = match connect_app(&sidecar.settings.upstream, &sidecar.metrics, client).await {
        Ok(s) => s,
        Err(why) => return upstream_failed(&sidecar, why.kind(), why.to_string()),
    };
    let (mut sender, conn) = match client_http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
    {
        Ok(pair) => pair,
        Err(e) => {
            return upstream_failed(
                &sidecar,
                ErrorKind::UpstreamConnect,
                format!("handshake failed: {e}"),
            );
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upstream handshake connection ended with an error");
        }
    });

    let (mut parts, body) = req.into_parts();
    headers::prepare_upgrade(&mut parts);
    headers::add_forwarded(&mut parts.headers, client.peer);
    let upstream_req = Request::from_parts(parts, crate::body::incoming(body));
    let mut resp = match timeout(
        sidecar.settings.client.handshake_timeout,
        sender.send_request(upstream_req),
    )
    .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            return upstream_failed(
                &sidecar,
                ErrorKind::UpstreamHandshake,
                format!("failed during the handshake: {e}"),
            );
        }
        Err(_) => {
            m.rejected(Rejection::UpstreamTimeout);
            m.error(ErrorKind::UpstreamTimeout);
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!("wsdrain: upstream {upstream} did not answer the upgrade in time"),
            );
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // 401, 404, 426...: the app's answer, as it is; counted so that failed upgrades
        // are visible next to wsdrain's own refusals.
        debug!(status = %resp.status(), "app refused the upgrade");
        m.rejected(Rejection::App);
        return resp.map(crate::body::incoming);
    }
    if !headers::is_websocket_switch(&resp) {
        return not_websocket(&sidecar, &resp);
    }
    let app_upgrade = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    tokio::spawn(
        relay_when_upgraded(sidecar.clone(), registration, client_upgrade, app_upgrade)
            .instrument(Span::current()),
    );
    Response::from_parts(parts, empty())
}

/// 502 for an upgrade the app could not take: `kind` is `upstream_connect` (no TCP
/// connection) or `upstream_handshake` (connected, then reset or closed before answering).
fn upstream_failed(sidecar: &Sidecar, kind: ErrorKind, why: String) -> Response<Body> {
    let upstream = sidecar.settings.upstream.addr;
    static LIMIT: LogLimit = LogLimit::new();
    if let Some(folded) = LIMIT.allow() {
        warn!(%upstream, folded, "upgrade refused: upstream {why}");
    }
    sidecar.metrics.rejected(Rejection::UpstreamUnavailable);
    sidecar.metrics.error(kind);
    plain(
        StatusCode::BAD_GATEWAY,
        format!("wsdrain: upstream {upstream} {why}"),
    )
}

/// 502 for a 101 that does not switch to WebSocket (`Upgrade: h2c`, or no `Upgrade`
/// at all). wsdrain only ever relays WebSocket: another protocol would be parsed as
/// frames and could get a close frame injected at a drain. The app's connection is
/// dropped with the answer; the client's stays HTTP/1.1.
fn not_websocket(sidecar: &Sidecar, resp: &Response<Incoming>) -> Response<Body> {
    static LIMIT: LogLimit = LogLimit::new();
    let upgrade = resp
        .headers()
        .get(UPGRADE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if let Some(folded) = LIMIT.allow() {
        warn!(
            upstream = %sidecar.settings.upstream.addr,
            %upgrade,
            folded,
            "the app answered 101 without switching to websocket; refused"
        );
    }
    sidecar.metrics.rejected(Rejection::App);
    sidecar.metrics.error(ErrorKind::UpstreamHandshake);
    plain(
        StatusCode::BAD_GATEWAY,
        format!(
            "wsdrain: upstream {} answered 101 without switching to websocket (Upgrade: {upgrade:?})",
            sidecar.settings.upstream.addr
        ),
    )
}

/// Takes the raw TCP stream and the bytes hyper read ahead out of an upgrade.
fn raw_parts(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}

/// [`raw_parts`] for the client, whose stream may be TLS (then with its session).
fn client_parts(upgraded: Upgraded) -> Option<(Socket, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((Socket::Plain(parts.io.into_inner()), parts.read_buf)),
        Err(other) => other,
    };
    let parts = upgraded
        .downcast::<TokioIo<Box<tls::TlsTransport>>>()
        .ok()?;
    Some((Socket::Tls(parts.io.into_inner()), parts.read_buf))
}

async fn relay_when_upgraded(
    sidecar: Arc<Sidecar>,
    registration: Registration,
    client: OnUpgrade,
    app: OnUpgrade,
) {
    let (client, app) = match tokio::join!(client, app) {
        (Ok(c), Ok(a)) => (c, a),
        (c, a) => {
            debug!(
                client_ok = c.is_ok(),
                app_ok = a.is_ok(),
                "upgrade did not complete"
            );
            return;
        }
    };
    let (Some((client, client_early)), Some((app, app_early))) =
        (client_parts(client), raw_parts(app))
    else {
        warn!("upgraded connection is not a TCP or TLS stream");
        return;
    };
    relay_connection(&sidecar, registration, client, client_early, app, app_early).await;
}
