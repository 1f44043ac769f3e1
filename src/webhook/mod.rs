//! `wsdrain webhook`: the mutating admission webhook that injects the sidecar into
//! opted-in pods, over HTTPS.
//!
//! `POST /mutate` takes an AdmissionReview v1 and answers with a JSON Patch computed by
//! the same function as `wsdrain inject` (see `review.rs`); `GET /healthz` is for the
//! kubelet. The MutatingWebhookConfiguration calls `/mutate/namespace-enabled` for
//! namespaces labelled `wsdrain.io/inject=enabled` (the API server knows the label
//! through its `namespaceSelector`, so the webhook needs no API access to look
//! namespaces up) and `/mutate` elsewhere, where the pod's own annotation decides. TLS follows cert-manager's rotations (`tls.rs`).
//!
//! Flow: HTTPS connections in from the shared accept loop; AdmissionReviews in, through
//! [`review`] and the injector; JSON Patches out.

pub mod metrics;
pub mod review;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::body::{Body, plain, response};
use crate::cli::WebhookOptions;
use crate::inject::{InjectConfig, Settings};
use crate::log_limit::LogLimit;
use crate::waiting_room::{Seat, WaitingRoom};
use tls::CertReloader;

/// The path the MutatingWebhookConfiguration calls for namespaces labelled
/// `wsdrain.io/inject=enabled` (`/mutate?namespace=enabled` works too, for `url`
/// client configs; a service `path` may not carry a query).
pub const NAMESPACE_PATH: &str = "/mutate/namespace-enabled";

/// Largest request body read; the API server's own request limit is 3 MiB.
pub const MAX_BODY: usize = 4 << 20;

/// Most connections served at once (TLS done); past it a new one is closed at once.
/// The API server keeps a handful of connections per webhook; the bound stops a crowd
/// of slow clients from holding descriptors, tasks and TLS buffers without limit.
pub const MAX_CONNECTIONS: usize = 128;

/// Most connections in their TLS handshake at once, a budget apart from
/// [`MAX_CONNECTIONS`]: sockets that never start TLS cannot take a serving place. Past
/// it the oldest handshaking connection is shed, so the API server's connection (which
/// completes its handshake within a round trip or two) always gets through.
pub const MAX_HANDSHAKING: usize = 256;

/// Time a connection has to complete its TLS handshake. The API server does it in
/// milliseconds; the bound keeps idle sockets from holding a handshake place for long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections in their TLS handshake right now.
static HANDSHAKING: WaitingRoom = WaitingRoom::new(MAX_HANDSHAKING);

/// How long a request body may take to arrive, in total; past it the answer is 408.
/// The API server sends a review in one go and gives a webhook 10 s at most.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies up to this size are read with no further check: a pod's review is typically
/// 5–50 KiB. `MAX_CONNECTIONS` of them is 32 MiB at worst.
pub const SMALL_BODY: usize = 256 << 10;

/// Bodies over [`SMALL_BODY`] (up to [`MAX_BODY`]) being read at once; one more gets a
/// 503. Four is 16 MiB at worst, so the webhook stays well inside its 128 Mi limit
/// however many clients send large bodies slowly.
pub const MAX_LARGE_BODIES: usize = 4;

/// Runs `wsdrain webhook` until SIGTERM/SIGINT, then keeps serving for the shutdown
/// delay (while the endpoint is removed) and exits.
pub async fn run(opts: WebhookOptions) -> anyhow::Result<()> {
    let certs = Arc::new(
        CertReloader::new(&opts.tls_cert, &opts.tls_key).context("loading the TLS certificate")?,
    );
    let cfg = Arc::new(InjectConfig {
        defaults: Settings::from(&opts.defaults),
        all: false,
        token: None,
        upgrade: true,
    });
    let listener = crate::sockets::bind(opts.listen, "webhook")?;
    info!(listen = %opts.listen, "wsdrain webhook ready");
    let server = tokio::spawn(serve(listener, certs, cfg));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!(delay = ?opts.shutdown_delay, "signal received; serving until the endpoint is gone");
    tokio::time::sleep(opts.shutdown_delay).await;
    server.abort();
    info!("wsdrain webhook exiting");
    Ok(())
}

/// Serves HTTPS on `listener` forever; each connection gets the current certificate.
/// At most [`MAX_HANDSHAKING`] connections in their TLS handshake (the oldest shed past
/// it) and [`MAX_CONNECTIONS`] served after it (a new one closed past it).
pub async fn serve(listener: TcpListener, certs: Arc<CertReloader>, cfg: Arc<InjectConfig>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let full_log = Arc::new(LogLimit::new());
    crate::accept::serve(listener, "webhook", || {}, |stream, peer| {
        let seat = HANDSHAKING.enter();
        let certs = certs.clone();
        let cfg = cfg.clone();
        let builder = builder.clone();
        let slots = slots.clone();
        let full_log = full_log.clone();
        tokio::spawn(async move {
            let Some(tls) = handshake(stream, peer, &certs, &seat).await else {
                return;
            };
            drop(seat);
            let Ok(_slot) = slots.try_acquire_owned() else {
                metrics::global().refused(metrics::RefusedStage::Served);
                if let Some(folded) = full_log.allow() {
                    warn!(%peer, folded, "{MAX_CONNECTIONS} webhook connections open; closing a new one");
                }
                return;
            };
            let service = service_fn(move |req| route(cfg.clone(), peer, req));
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    })
    .await;
}

/// The TLS handshake of one connection, bounded by [`TLS_HANDSHAKE_TIMEOUT`] and by its
/// seat among the handshaking ones. `None`: failed, out of time, or shed (the last two
/// counted as refused).
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    certs: &Arc<CertReloader>,
    seat: &Seat,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    // The certificate check reads two files: off the async worker threads.
    let certs = certs.clone();
    let config = match tokio::task::spawn_blocking(move || certs.current()).await {
        Ok(config) => config,
        Err(e) => {
            warn!(%peer, error = %e, "loading the TLS configuration failed");
            return None;
        }
    };
    let acceptor = TlsAcceptor::from(config);
    tokio::select! {
        biased;
        done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match done {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics::global().refused(metrics::RefusedStage::TlsHandshake);
                debug!(%peer, "TLS handshake timed out");
                None
            }
        },
        () = seat.shed() => {
            metrics::global().refused(metrics::RefusedStage::TlsHandshake);
            debug!(%peer, "shed in its TLS handshake, to make room for newer connections");
            None
        }
    }
}

async fn route(
    cfg: Arc<InjectConfig>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
        (&Method::GET, "/metrics") => metrics::response(),
        (&Method::POST, path @ ("/mutate" | NAMESPACE_PATH)) => {
            let namespace_opted_in = path == NAMESPACE_PATH
                || req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv == "namespace=enabled"));
            mutate(&cfg, peer, req, namespace_opted_in).await
        }
        (_, "/healthz" | "/mutate" | NAMESPACE_PATH) => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try POST /mutate or GET /healthz",
        ),
    };
    Ok(resp)
}

/// Large bodies being read right now (see [`MAX_LARGE_BODIES`]).
static LARGE_BODIES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_LARGE_BODIES`] places; given back on drop.
struct LargeBody;

impl LargeBody {
    fn take() -> Option<LargeBody> {
        LARGE_BODIES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LARGE_BODIES).then_some(n + 1)
            })
            .ok()
            .map(|_| LargeBody)
    }
}

impl Drop for LargeBody {
    fn drop(&mut self) {
        LARGE_BODIES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer that also closes the connection: the rest of the body is not read.
fn refuse(status: StatusCode, why: String) -> Box<Response<Body>> {
    let mut resp = plain(status, why);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Box::new(resp)
}

/// Reads a review's body, bounded in size ([`MAX_BODY`], 413), in time
/// ([`BODY_TIMEOUT`], 408) and in memory across requests (bodies over [`SMALL_BODY`]
/// need one of [`MAX_LARGE_BODIES`] places, else 503).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Box<Response<Body>>> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes"),
        ));
    }
    let mut large: Option<LargeBody> = None;
    let too_many = || {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_LARGE_BODIES} request bodies over {SMALL_BODY} bytes are being read already; retry"
            ),
        )
    };
    if declared.is_some_and(|n| n > SMALL_BODY as u64) {
        large = Some(LargeBody::take().ok_or_else(too_many)?);
    }
    let mut body = req.into_body();
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > MAX_BODY {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY} bytes"),
                ));
            }
            if buf.len() + data.len() > SMALL_BODY && large.is_none() {
                large = Some(LargeBody::take().ok_or_else(too_many)?);
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(Bytes::from(buf)),
        Ok(Err(resp)) => Err(resp),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

async fn mutate(
    cfg: &InjectConfig,
    peer: SocketAddr,
    req: Request<Incoming>,
    namespace_opted_in: bool,
) -> Response<Body> {
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    match review::review(&body, cfg, namespace_opted_in) {
        Ok(reviewed) => {
            info!(
                uid = %reviewed.uid,
                object = %reviewed.object,
                outcome = ?reviewed.outcome,
                dry_run = reviewed.dry_run,
                "admission review"
            );
            response(StatusCode::OK, "application/json", reviewed.body)
        }
        Err(e) => {
            warn!(%peer, error = %e, "malformed admission review");
            plain(StatusCode::BAD_REQUEST, e)
        }
    }
}
