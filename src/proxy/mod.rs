//! The sidecar's client-facing side: accepts connections, serves HTTP/1.1 with hyper,
//! and sends each request down one of two paths — a WebSocket upgrade
//! ([`upgrade`]) or a plain HTTP request ([`forward`]).

mod forward;
mod headers;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, body::Incoming};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

use crate::body::{Body, full};
use crate::cli::ProxyOptions;
use crate::connections::Connections;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::relay::RelaySettings;

/// Everything the request handlers share.
pub struct Shared {
    /// The proxy flags.
    pub opts: ProxyOptions,
    /// Exported metrics.
    pub metrics: Metrics,
    /// Open WebSocket connections.
    pub connections: Arc<Connections>,
    /// Drain state.
    pub drain: Arc<Drain>,
    /// Settings every relay gets.
    pub relay: RelaySettings,
    client: Client<HttpConnector, Incoming>,
    server: http1::Builder,
}

impl Shared {
    /// Builds the shared state from the flags.
    pub fn new(opts: ProxyOptions, metrics: Metrics, drain: Arc<Drain>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(opts.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .header_read_timeout(opts.handshake_timeout)
            .max_buf_size(opts.max_header_size)
            .preserve_header_case(true)
            .keep_alive(true);
        let relay = RelaySettings {
            close_code: opts.close_code,
            close_timeout: opts.close_timeout,
            max_message: opts.max_message_size,
            reconnect_jitter: opts.reconnect_jitter,
        };
        Arc::new(Shared {
            opts,
            metrics,
            connections: Arc::new(Connections::default()),
            drain,
            relay,
            client,
            server,
        })
    }
}

/// Accepts client connections until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let id = shared.connections.next_id();
                let span = info_span!("conn", id, %peer);
                let shared = shared.clone();
                tokio::spawn(
                    async move {
                        let service = service_fn({
                            let shared = shared.clone();
                            move |req| route(shared.clone(), req, peer, id)
                        });
                        if let Err(e) = shared
                            .server
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await
                        {
                            debug!(error = %e, "client connection ended with an error");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // EMFILE and friends: say so at most once a second, and back off
                // instead of spinning on a listener that stays readable.
                shared.metrics.error("accept");
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!(error = %e, "accept failed");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    id: u64,
) -> Result<Response<Body>, Infallible> {
    if headers::is_websocket_upgrade(&req) {
        Ok(upgrade::handle(shared, req, peer, id).await)
    } else {
        Ok(forward::handle(shared, req, peer).await)
    }
}

/// A short plain-text answer of wsdrain's own.
fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(full(text + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
