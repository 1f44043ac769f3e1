//! The HTTP/1.1 front end: serves client connections with hyper and sends each request
//! down one of two paths — a WebSocket upgrade ([`upgrade`]) or a plain HTTP request
//! ([`forward`]).
//!
//! Flow: accepted sockets come in from the listener ([`crate::accept`]), get their
//! addresses ([`crate::conn::accept_client`]) and are served by hyper; an upgrade leaves
//! through [`crate::conn::relay_connection`] after the 101, a plain request through the
//! pooled client to the app. Headers towards the app are shaped in [`headers`].

mod forward;
mod headers;
mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span};

use crate::body::Body;
use crate::conn::{ClientAddrs, accept_client};
use crate::metrics::ErrorKind;
use crate::state::Sidecar;

/// Serves client connections until the process ends.
pub async fn serve(sidecar: Arc<Sidecar>, listener: TcpListener) {
    let client = Arc::new(forward::pooled_client(&sidecar.settings));
    let mut server = http1::Builder::new();
    server
        .timer(TokioTimer::new())
        .header_read_timeout(sidecar.settings.handshake_timeout)
        .max_buf_size(sidecar.settings.max_header_size)
        .preserve_header_case(true)
        .keep_alive(true);
    let on_error = {
        let sidecar = sidecar.clone();
        move || sidecar.metrics.error(ErrorKind::Accept)
    };
    crate::accept::serve(listener, "listen", on_error, |mut stream, peer| {
        let id = sidecar.connections.next_id();
        let span = info_span!("conn", id, %peer);
        let sidecar = sidecar.clone();
        let client = client.clone();
        let server = server.clone();
        tokio::spawn(
            async move {
                let Some(addrs) = accept_client(&sidecar, &mut stream, peer).await else {
                    return;
                };
                let service = service_fn({
                    let sidecar = sidecar.clone();
                    move |req| route(sidecar.clone(), client.clone(), req, addrs, id)
                });
                if let Err(e) = server
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    if let Some(kind) = rejection_kind(&e) {
                        sidecar.metrics.error(kind);
                    }
                    debug!(error = %e, "client connection ended with an error");
                }
            }
            .instrument(span),
        );
    })
    .await;
}

async fn route(
    sidecar: Arc<Sidecar>,
    client: Arc<forward::PooledClient>,
    req: Request<Incoming>,
    addrs: ClientAddrs,
    id: u64,
) -> Result<Response<Body>, Infallible> {
    if headers::is_websocket_upgrade(&req) {
        Ok(upgrade::handle(sidecar, req, addrs, id).await)
    } else {
        Ok(forward::handle(sidecar, &client, req, addrs.peer).await)
    }
}

/// The error kind for a request hyper refused before it reached a handler (it answers
/// 400 or 431 itself, or closes a slow head); `None` for a client that simply left.
fn rejection_kind(e: &hyper::Error) -> Option<ErrorKind> {
    if e.is_timeout() {
        Some(ErrorKind::HeaderTimeout)
    } else if e.is_parse_too_large() {
        Some(ErrorKind::HeaderTooLarge)
    } else if e.is_parse() || e.is_parse_status() {
        Some(ErrorKind::BadRequest)
    } else {
        None
    }
}
