//! `wsdrain webhook`: the mutating admission webhook that injects the sidecar into
//! opted-in pods, over HTTPS.
//!
//! `POST /mutate` takes an AdmissionReview v1 and answers with a JSON Patch computed by
//! the same function as `wsdrain inject` (see `review.rs`); `GET /healthz` is for the
//! kubelet. The MutatingWebhookConfiguration calls `/mutate/namespace-enabled` for
//! namespaces labelled `wsdrain.io/inject=enabled` (the API server knows the label
//! through its `namespaceSelector`, so the webhook needs no API access to look
//! namespaces up) and `/mutate` elsewhere, where the pod's own annotation decides. TLS follows cert-manager's rotations (`tls.rs`).

pub mod metrics;
pub mod review;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::body::{Body, plain, response};
use crate::cli::WebhookOptions;
use crate::inject::{InjectConfig, Settings};
use crate::log_limit::LogLimit;
use tls::CertReloader;

/// The path the MutatingWebhookConfiguration calls for namespaces labelled
/// `wsdrain.io/inject=enabled` (`/mutate?namespace=enabled` works too, for `url`
/// client configs; a service `path` may not carry a query).
pub const NAMESPACE_PATH: &str = "/mutate/namespace-enabled";

/// Largest request body read; the API server's own request limit is 3 MiB.
pub const MAX_BODY: usize = 4 << 20;

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
pub async fn serve(listener: TcpListener, certs: Arc<CertReloader>, cfg: Arc<InjectConfig>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                static LIMIT: LogLimit = LogLimit::new();
                if let Some(folded) = LIMIT.allow() {
                    warn!(error = %e, folded, "webhook accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let certs = certs.clone();
        let cfg = cfg.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(certs.current());
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req| route(cfg.clone(), peer, req));
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
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

async fn mutate(
    cfg: &InjectConfig,
    peer: SocketAddr,
    req: Request<Incoming>,
    namespace_opted_in: bool,
) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_big {
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY} bytes"),
                )
            } else {
                plain(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            };
        }
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
