//! The admin port: what Prometheus, the kubelet and operators talk to.
//!
//! `GET /metrics`, `GET /healthz`, `GET /readyz` (503 while draining or when the app does
//! not accept TCP), `POST /drain`, `GET /drain` (JSON status), `GET /prestop` (starts a
//! drain and answers only when it is over and no plain HTTP response is in flight: what
//! a kubelet `httpGet` preStop hook calls, so the app container outlives every client), `DELETE /drain` (cancels a drain an
//! operator started), `POST /shed?count=N` (closes N connections over the drain
//! window). Every answer is built after the request took effect, from the drain's own
//! state. State-changing endpoints require
//! `Authorization: Bearer <token>` when `--admin-token-file` is set; the file is checked
//! on every such request (`admin_token`: cached, re-read when it changed), so a rotated
//! token takes effect without a restart.
//!
//! Flow: requests come in from the admin listener ([`crate::accept`]); reads go to the
//! metrics, the registry and [`crate::drain::Drain::status`]; writes go out as drain
//! triggers, cancels and [`crate::rebalance::shed`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;

use crate::body::{Body, plain, response};
use crate::drain::{Phase, Source, Trigger};
use crate::in_flight;
use crate::metrics::{ErrorKind, Metrics};
use crate::state::{AdminSettings, Sidecar, UpstreamSettings};

/// Serves the admin port until the process ends.
pub async fn serve(sidecar: Arc<Sidecar>, listener: TcpListener) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let on_error = {
        let sidecar = sidecar.clone();
        move || sidecar.metrics.error(ErrorKind::AdminAccept)
    };
    crate::accept::serve(listener, "admin", on_error, |stream, _| {
        let sidecar = sidecar.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(sidecar.clone(), req));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection ended with an error");
            }
        });
    })
    .await;
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    response(status, "application/json", body + "\n")
}

async fn route(
    sidecar: Arc<Sidecar>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let drain = &sidecar.drain;
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            sidecar.metrics.render(),
        ),
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => readyz(&sidecar).await,
        (&Method::GET, "/drain") => json(StatusCode::OK, &drain.status()),
        (&Method::POST, "/drain") => match authorize(&sidecar.settings.admin, &req) {
            Err(resp) => *resp,
            Ok(()) => {
                drain.trigger(Trigger::Graceful, Source::Operator);
                json(StatusCode::ACCEPTED, &drain.status())
            }
        },
        (&Method::DELETE, "/drain") => match authorize(&sidecar.settings.admin, &req) {
            Err(resp) => *resp,
            Ok(()) => match drain.cancel() {
                Ok(()) => json(StatusCode::OK, &drain.status()),
                Err(why) => plain(StatusCode::CONFLICT, why.to_string()),
            },
        },
        (&Method::GET, "/prestop") => match authorize(&sidecar.settings.admin, &req) {
            Err(resp) => *resp,
            Ok(()) => {
                let _waiter = drain.prestop_waiter();
                drain.trigger(Trigger::Graceful, Source::Prestop);
                drain.wait_done_or_cancelled().await;
                if drain.phase() == Phase::Done {
                    // The app container's SIGTERM follows this answer: plain responses
                    // still streaming from it finish first (they are cut at the
                    // deadline, so this ends by then).
                    let by = drain
                        .deadline()
                        .map_or_else(Instant::now, |d| d + crate::drain::EXIT_GRACE);
                    let _ = timeout_at(by, sidecar.http.wait_quiet(in_flight::QUIET)).await;
                }
                json(StatusCode::OK, &drain.status())
            }
        },
        (&Method::POST, "/shed") => match authorize(&sidecar.settings.admin, &req) {
            Err(resp) => *resp,
            Ok(()) => match shed_count(req.uri().query()) {
                Some(_) if drain.is_draining() => plain(
                    StatusCode::CONFLICT,
                    "a drain is under way; it closes every connection",
                ),
                Some(count) => match crate::rebalance::shed(&sidecar, count) {
                    Ok(shedding) => json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({
                            "shedding": shedding.count,
                            "window_ms": u64::try_from(shedding.length.as_millis()).unwrap_or(u64::MAX),
                        }),
                    ),
                    Err(busy) => plain(StatusCode::CONFLICT, busy.to_string()),
                },
                None => plain(
                    StatusCode::BAD_REQUEST,
                    "POST /shed needs ?count=N with N a whole number",
                ),
            },
        },
        (_, "/metrics" | "/healthz" | "/readyz" | "/drain" | "/prestop" | "/shed") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz, /drain, /prestop, /shed",
        ),
    };
    Ok(resp)
}

fn shed_count(query: Option<&str>) -> Option<usize> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("count="))
        .and_then(|n| n.parse().ok())
}

async fn readyz(sidecar: &Sidecar) -> Response<Body> {
    if sidecar.drain.is_draining() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match probe_upstream(&sidecar.settings.upstream, &sidecar.metrics).await {
        Ok(()) => plain(StatusCode::OK, "ok"),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
    }
}

/// How long `/readyz` waits for the app to accept TCP.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why `/readyz` found the app not ready; the message is the 503's body.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The app refused the connection.
    #[error("upstream {upstream} does not accept connections: {source}")]
    Refused {
        /// The app's address.
        upstream: std::net::SocketAddr,
        /// What the connect returned.
        source: std::io::Error,
    },
    /// The app did not accept within [`PROBE_TIMEOUT`].
    #[error("upstream {0} did not accept a connection within 1s")]
    Timeout(std::net::SocketAddr),
}

/// Checks that the app accepts TCP within 1 s, and records the answer in
/// `wsdrain_upstream_up`.
pub async fn probe_upstream(
    settings: &UpstreamSettings,
    metrics: &Metrics,
) -> Result<(), ProbeError> {
    let upstream = settings.addr;
    let result = match timeout(PROBE_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(ProbeError::Refused { upstream, source }),
        Err(_) => Err(ProbeError::Timeout(upstream)),
    };
    metrics.upstream_up.set(i64::from(result.is_ok()));
    result
}

/// Checks the bearer token when a token file is configured.
fn authorize(settings: &AdminSettings, req: &Request<Incoming>) -> Result<(), Box<Response<Body>>> {
    let Some(path) = &settings.token_file else {
        return Ok(());
    };
    let expected = match crate::admin_token::expected(path) {
        Ok(t) => t,
        Err(_) => {
            return Err(Box::new(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin token file is unreadable or empty",
            )));
        }
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => {
            let mut resp = plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            Err(Box::new(resp))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
