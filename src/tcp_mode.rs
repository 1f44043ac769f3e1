//! `--mode tcp`: the sidecar as a byte relay for any TCP protocol (MQTT, raw sockets,
//! TLS passthrough), with the same connection counting, limits, admin port and drain.
//!
//! Without frames there is no close frame to send: a drained connection gets a FIN
//! (half-close) at its scheduled time, and the app side is closed after the client's
//! own FIN or the close timeout. Over `--max-connections` or during the stagger a new
//! connection is closed at once (nothing can be said to it at this layer).
//!
//! With TLS (`--tls-cert`/`--tls-dir`) the client's bytes are decrypted here and the app
//! gets plaintext; a drained connection then gets `close_notify` before its FIN, so a
//! TLS client sees a clean end rather than a truncation.
//!
//! Flow: sockets in from the listener on a data-path thread ([`crate::workers::serve`]);
//! each is registered in the registry, given an app connection and relayed through
//! [`crate::connection`], like a WebSocket after its 101.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

use crate::connection::{accept_client, connect_app, relay_connection};
use crate::log_limit::LogLimit;
use crate::metrics::{ErrorKind, Rejection};
use crate::state::Sidecar;
use crate::tls::{Socket, Tls};

/// Accepts client connections until the process ends; over TLS when `tls` is given.
pub async fn serve(sidecar: Arc<Sidecar>, listener: TcpListener, tls: Option<Arc<Tls>>) {
    let on_error = {
        let sidecar = sidecar.clone();
        move || sidecar.metrics.error(ErrorKind::Accept)
    };
    let upstream_log = Arc::new(LogLimit::new());
    crate::workers::serve(listener, "listen", on_error, move |stream, peer| {
        let id = sidecar.connections.next_id();
        let sidecar = sidecar.clone();
        let upstream_log = upstream_log.clone();
        let tls = tls.clone();
        serve_one(sidecar, stream, peer, id, upstream_log, tls)
            .instrument(info_span!("conn", id, %peer))
    })
    .await;
}

/// One TCP connection: the TLS handshake if any, limits, the app connection, the relay.
async fn serve_one(
    sidecar: Arc<Sidecar>,
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    id: u64,
    upstream_log: Arc<LogLimit>,
    tls: Option<Arc<Tls>>,
) {
    let Some(client) = accept_client(
        &sidecar.settings.client,
        &sidecar.metrics,
        &mut stream,
        peer,
    )
    .await
    else {
        return;
    };
    let stream = match tls {
        None => Socket::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Some(s) => Socket::Tls(s),
            None => return,
        },
    };
    let rejected = |reason: Rejection| {
        sidecar.metrics.rejected(reason);
        debug!(reason = reason.as_str(), "connection refused");
    };
    let registration = match sidecar
        .connections
        .register(id, sidecar.settings.client.max_connections)
    {
        Ok(registration) => registration,
        Err(refused) => return rejected(refused.into()),
    };
    let app = match connect_app(&sidecar.settings.upstream, &sidecar.metrics, client).await {
        Ok(app) => app,
        Err(why) => {
            sidecar.metrics.error(why.kind());
            if let Some(folded) = upstream_log.allow() {
                warn!(upstream = %sidecar.settings.upstream.addr, folded, "connection refused: upstream {why}");
            }
            return rejected(Rejection::UpstreamUnavailable);
        }
    };
    relay_connection(
        &sidecar,
        registration,
        stream,
        Bytes::new(),
        app,
        Bytes::new(),
    )
    .await;
}
