//! The admin port: what Prometheus, the kubelet and operators talk to.
//!
//! `GET /metrics`, `GET /healthz`, `GET /readyz` (503 while draining or when the app does
//! not accept TCP), `POST /drain`, `GET /drain` (JSON status), `GET /prestop` (starts a
//! drain and answers only when it is over: what a kubelet `httpGet` preStop hook calls,
//! so the app container outlives every client), `POST /shed?count=N` (closes N
//! connections over the drain window). State-changing endpoints require
//! `Authorization: Bearer <token>` when `--admin-token-file` is set; the file is checked
//! on every such request (`admin_token`: cached, re-read when it changed), so a rotated
//! token takes effect without a restart.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::body::{Body, plain, response};
use crate::drain::Trigger;
use crate::log_limit::LogLimit;
use crate::proxy::Shared;

/// Serves the admin port until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: counted, logged at most once a second, and backed
                // off so a listener that stays readable does not turn into a busy loop.
                shared.metrics.error("admin_accept");
                static LIMIT: LogLimit = LogLimit::new();
                if let Some(folded) = LIMIT.allow() {
                    warn!(error = %e, folded, "admin accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(shared.clone(), req));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    response(status, "application/json", body + "\n")
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let open = || shared.connections.len();
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(),
        ),
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => readyz(&shared).await,
        (&Method::GET, "/drain") => json(StatusCode::OK, &shared.drain.status(open())),
        (&Method::POST, "/drain") => match authorize(&shared, &req) {
            Err(resp) => *resp,
            Ok(()) => {
                shared.drain.trigger(Trigger::Graceful, "POST /drain");
                json(StatusCode::ACCEPTED, &shared.drain.status(open()))
            }
        },
        (&Method::GET, "/prestop") => match authorize(&shared, &req) {
            Err(resp) => *resp,
            Ok(()) => {
                let _waiter = shared.drain.prestop_waiter();
                shared.drain.trigger(Trigger::Graceful, "GET /prestop");
                shared.drain.wait_done().await;
                json(StatusCode::OK, &shared.drain.status(open()))
            }
        },
        (&Method::POST, "/shed") => match authorize(&shared, &req) {
            Err(resp) => *resp,
            Ok(()) => match shed_count(req.uri().query()) {
                Some(count) => {
                    let shedding = crate::rebalance::shed(&shared, count);
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({
                            "shedding": shedding,
                            "window_ms": shared.opts.drain.drain_window.as_millis() as u64,
                        }),
                    )
                }
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
            "not found: try /metrics, /healthz, /readyz, /drain, /prestop",
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

async fn readyz(shared: &Shared) -> Response<Body> {
    if shared.drain.is_draining() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match probe_upstream(shared).await {
        Ok(()) => plain(StatusCode::OK, "ok"),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// Checks that the app accepts TCP within 1 s, and records the answer in
/// `wsdrain_upstream_up`.
pub async fn probe_upstream(shared: &Shared) -> Result<(), String> {
    let upstream = shared.opts.upstream;
    let result = match timeout(Duration::from_secs(1), TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "upstream {upstream} does not accept connections: {e}"
        )),
        Err(_) => Err(format!(
            "upstream {upstream} did not accept a connection within 1s"
        )),
    };
    shared.metrics.upstream_up.set(i64::from(result.is_ok()));
    result
}

/// Checks the bearer token when a token file is configured.
fn authorize(shared: &Shared, req: &Request<Incoming>) -> Result<(), Box<Response<Body>>> {
    let Some(path) = &shared.opts.admin_token_file else {
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
