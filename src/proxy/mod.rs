//! The HTTP/1.1 front end: serves client connections with hyper and sends each request
//! down one of two paths — a WebSocket upgrade (`upgrade`) or a plain HTTP request
//! (`forward`); a plaintext connection that opens with an `EventSource` request is
//! served off hyper instead (`event_stream`), so an idle stream holds no HTTP buffers.
//!
//! Flow: accepted sockets come in from the listener ([`crate::workers::serve`]), get
//! their addresses ([`crate::connection::accept_client`]), their TLS handshake when the proxy
//! terminates TLS ([`crate::tls`]), and are served by hyper; an upgrade leaves
//! through [`crate::connection::relay_connection`] after the 101, a plain request through the
//! pooled client to the app. Headers towards the app are shaped in `headers`.

mod draining;
mod event_stream;
mod forward;
mod headers;
mod response;
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
use crate::connection::{ClientAddrs, accept_client};
use crate::metrics::{ErrorKind, WaitingStage};
use crate::state::Sidecar;
use crate::tls::Tls;
use crate::waiting_room::WaitingRoom;

/// Most client connections that may be waiting for their first request head at once
/// (each is bounded in time by `--handshake-timeout` too). Past it the oldest waiting
/// one is closed: a real client sends its head in its first packet, so the oldest are
/// the stalled ones.
pub const MAX_PENDING_HEADS: usize = 1024;

/// The connections waiting for their first request head right now.
static PENDING_HEADS: WaitingRoom = WaitingRoom::new(MAX_PENDING_HEADS);

/// Serves client connections until the process ends; over TLS when `tls` is given.
pub async fn serve(sidecar: Arc<Sidecar>, listener: TcpListener, tls: Option<Arc<Tls>>) {
    tokio::spawn(draining::cut_at_deadline(sidecar.clone()));
    let client = Arc::new(forward::pooled_client(&sidecar.settings));
    let mut server = http1::Builder::new();
    server
        .timer(TokioTimer::new())
        .header_read_timeout(sidecar.settings.client.handshake_timeout)
        .max_buf_size(sidecar.settings.client.max_header_size)
        .preserve_header_case(true)
        .keep_alive(true);
    let on_error = {
        let sidecar = sidecar.clone();
        move || sidecar.metrics.error(ErrorKind::Accept)
    };
    crate::workers::serve(listener, "listen", on_error, move |mut stream, peer| {
        let id = sidecar.connections.next_id();
        let span = info_span!("conn", id, %peer);
        let sidecar = sidecar.clone();
        let client = client.clone();
        let server = server.clone();
        let tls = tls.clone();
        {
            async move {
                let settings = &sidecar.settings.client;
                let accepted = accept_client(settings, &sidecar.metrics, &mut stream, peer).await;
                let Some(addrs) = accepted else {
                    return;
                };
                // Waiting for the first request head: one of MAX_PENDING_HEADS seats,
                // given back when the head is complete (the service is called).
                let seat = PENDING_HEADS.enter();
                let shed = seat.on_shed();
                tokio::pin!(shed);
                if tls.is_none() {
                    // An EventSource's request is served off hyper (see `event_stream`).
                    let head = tokio::select! {
                        head = event_stream::first_request(&stream, sidecar.settings.client.max_header_size) => head,
                        () = &mut shed => {
                            sidecar.metrics.shed_waiting(WaitingStage::HttpHead);
                            return;
                        }
                        () = tokio::time::sleep(sidecar.settings.client.handshake_timeout) => {
                            sidecar.metrics.error(ErrorKind::HeaderTimeout);
                            return;
                        }
                    };
                    if let Some(len) = head {
                        drop(seat);
                        // A task of its own, sized for this path alone (this one is
                        // sized for hyper's), as a WebSocket's relay is.
                        tokio::spawn(
                            event_stream::serve(sidecar, stream, len, addrs, id)
                                .instrument(tracing::Span::current()),
                        );
                        return;
                    }
                }
                let seat = std::sync::Mutex::new(Some(seat));
                let activity = Arc::new(draining::Activity::new());
                let service = service_fn({
                    let sidecar = sidecar.clone();
                    let activity = activity.clone();
                    move |req| {
                        // The head is complete: this connection waits no more.
                        if let Ok(mut waiting) = seat.lock() {
                            waiting.take();
                        }
                        activity.request();
                        route(sidecar.clone(), client.clone(), req, addrs, id)
                    }
                });
                let served = match tls {
                    None => {
                        let io = TokioIo::new(stream);
                        serve_http(&sidecar, &server, io, service, shed, &activity).await
                    }
                    Some(tls) => {
                        let Some(stream) = tls.accept(stream).await else {
                            return;
                        };
                        let io = TokioIo::new(stream);
                        serve_http(&sidecar, &server, io, service, shed, &activity).await
                    }
                };
                let Some(served) = served else {
                    return; // shed before its first request head
                };
                if let Err(e) = served {
                    if let Some(kind) = rejection_kind(&e) {
                        sidecar.metrics.error(kind);
                    }
                    debug!(error = %e, "client connection ended with an error");
                }
            }
            .instrument(span)
        }
    })
    .await;
}

/// One client connection's HTTP/1.1 exchange, plaintext or TLS alike: hyper serves it
/// until it ends, unless the waiting room sheds it before its first request head
/// (`None`), the drain closes it at its turn (an idle keep-alive connection at once, a
/// busy one after its current answer), or the process stops.
async fn serve_http<I, S>(
    sidecar: &Sidecar,
    server: &http1::Builder,
    io: I,
    service: S,
    shed: impl Future<Output = ()>,
    activity: &draining::Activity,
) -> Option<hyper::Result<()>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = server.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        biased;
        served = conn.as_mut() => served,
        () = shed => {
            sidecar.metrics.shed_waiting(WaitingStage::HttpHead);
            debug!("shed before its first request head, to make room");
            return None;
        }
        _ = draining::close_turn(&sidecar.drain, activity) => {
            debug!("drain: this keep-alive connection's turn to close");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = sidecar.http.stopped() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    Some(served)
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
        Ok(forward::handle(sidecar, &client, req, addrs.peer, id).await)
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
