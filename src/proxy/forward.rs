//! Plain HTTP requests (anything that is not a WebSocket upgrade) reverse-proxied to the
//! app over a pooled keep-alive client, bodies streamed both ways.
//!
//! During a drain these keep working, with `Connection: close` on every answer so
//! keep-alive clients move to another pod. Every request is counted in flight until its
//! response is over, so the process waits for it; its body streams through
//! [`super::response`], which cuts it only at the drain's deadline. A Server-Sent
//! Events answer (`text/event-stream`, no `Content-Encoding`) is registered like a
//! WebSocket and closed on the drain's schedule; a compressed one cannot be ended at
//! an event boundary and is left to finish like any other response.
//!
//! A pooled connection the app closes while idle races with the next request written
//! onto it. A bodiless idempotent request (GET, HEAD, OPTIONS, TRACE) that fails that way
//! (closed or reset before any answer, see `closed_before_answer`) is sent once more on
//! a fresh connection, as RFC 9112 §9.3.1 allows, instead of becoming a 502 from a
//! healthy app. Any other failure (refused, timed out, an unparsable answer) is not
//! retried.
//!
//! Flow: a request from the HTTP front end in; to the app through the pooled client (or
//! the one retry); the app's answer back out to the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::warn;

use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{headers, response};
use crate::body::{Body, BodyError, empty, plain};
use crate::log_limit::LogLimit;
use crate::metrics::{ErrorKind, Rejection};
use crate::sockets;
use crate::state::{Settings, Sidecar};

/// The keep-alive client plain requests share, one per proxy.
pub type PooledClient = Client<HttpConnector, Body>;

/// Builds the pooled client: no delay, the connect timeout, idle connections kept 30 s.
pub fn pooled_client(settings: &Settings) -> PooledClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.upstream.connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Forwards one request from `peer` (connection `id`) to the app.
pub async fn handle(
    sidecar: Arc<Sidecar>,
    client: &PooledClient,
    req: Request<Incoming>,
    peer: SocketAddr,
    id: u64,
) -> Response<Body> {
    let in_flight = sidecar.http.enter();
    let upstream = sidecar.settings.upstream.addr;
    let (mut parts, body) = req.into_parts();
    let log_path: Box<str> = parts.uri.path().into();
    headers::to_origin_form(&mut parts.uri, &mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match Uri::try_from(format!("http://{upstream}{path}")) {
        Ok(uri) => uri,
        Err(_) => {
            return plain(StatusCode::BAD_REQUEST, "wsdrain: invalid request target");
        }
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarded(&mut parts.headers, peer);
    let retry = (body.is_end_stream() && is_idempotent(&parts.method)).then(|| replay_of(&parts));
    let is_head = parts.method == Method::HEAD;
    let first = client.request(Request::from_parts(parts, counted(&sidecar, body)));
    let request = async {
        match (first.await, retry) {
            (Err(e), Some(again)) if closed_before_answer(&e) => {
                tracing::debug!(error = %e, "pooled connection closed before an answer; retrying the idempotent request once on a fresh one");
                send_on_fresh_connection(&sidecar, again).await
            }
            (result, _) => result.map_err(ForwardError::Pooled),
        }
    };
    let mut cut = sidecar.http.cut_signal();
    let answered = tokio::select! {
        answered = timeout(sidecar.settings.upstream.response_timeout, request) => answered,
        _ = cut.wait_for(|cut| *cut) => return cut_before_answer(&sidecar, &log_path),
    };
    let mut resp = match answered {
        Ok(Ok(resp)) => {
            sidecar.metrics.upstream_up.set(1);
            resp
        }
        Ok(Err(e)) => {
            static LIMIT: LogLimit = LogLimit::new();
            if let Some(folded) = LIMIT.allow() {
                warn!(%upstream, error = %e, folded, "plain HTTP request to the app failed");
            }
            sidecar.metrics.error(ErrorKind::UpstreamHttp);
            if e.is_connect() {
                sidecar.metrics.upstream_up.set(0);
            }
            let resp = plain(
                StatusCode::BAD_GATEWAY,
                format!("wsdrain: upstream {upstream} unreachable: {}", e.reason()),
            );
            count(&sidecar, resp.status());
            return resp;
        }
        Err(_) => {
            static LIMIT: LogLimit = LogLimit::new();
            if let Some(folded) = LIMIT.allow() {
                warn!(%upstream, folded, "the app did not answer a plain HTTP request in time");
            }
            sidecar.metrics.error(ErrorKind::UpstreamTimeout);
            let resp = plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!("wsdrain: upstream {upstream} did not answer within --response-timeout"),
            );
            count(&sidecar, resp.status());
            return resp;
        }
    };
    headers::strip_hop_by_hop(resp.headers_mut());
    let sse = !is_head && resp.status() == StatusCode::OK && is_event_stream(resp.headers());
    let staggered = sse && !is_compressed(resp.headers());
    if sidecar.drain.is_draining() || staggered {
        // An SSE client reconnects on a fresh connection, so the balancer picks again.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    count(&sidecar, resp.status());
    resp.map(|body| {
        if staggered {
            let registration = sidecar
                .connections
                .register(id, sidecar.settings.client.max_connections)
                .inspect_err(|&refused| {
                    let reason = Rejection::from(refused);
                    sidecar
                        .metrics
                        .sse_refused
                        .with_label_values(&[reason.as_str()])
                        .inc();
                })
                .ok();
            response::sse(sidecar.clone(), body, in_flight, &log_path, registration)
        } else {
            if sse {
                sidecar.metrics.sse_compressed.inc();
            }
            response::plain(sidecar.clone(), body, in_flight, &log_path)
        }
    })
}

/// The request body on its way to the app, its bytes counted.
fn counted(sidecar: &Arc<Sidecar>, body: Incoming) -> Body {
    let bytes = sidecar.metrics.http_bytes_in.clone();
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            bytes.inc_by(data.len() as u64);
        }
        frame
    })
    .map_err(BodyError::from)
    .boxed_unsync()
}

/// The drain's deadline came before the app answered: 503, counted and logged as cut.
fn cut_before_answer(sidecar: &Sidecar, path: &str) -> Response<Body> {
    static LIMIT: LogLimit = LogLimit::new();
    sidecar.metrics.http_cut.inc();
    if let Some(folded) = LIMIT.allow() {
        warn!(%path, folded, "request cut at the drain deadline before the app answered");
    }
    let mut resp = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "wsdrain: the drain's deadline came before the app answered",
    );
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    count(sidecar, resp.status());
    resp
}

/// `Content-Type: text/event-stream` (parameters allowed).
pub(super) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// A `Content-Encoding` other than `identity`: event boundaries cannot be seen.
pub(super) fn is_compressed(headers: &http::HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    })
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The one error class a pooled request is retried on (RFC 9112 §9.3.1): the pooled
/// connection was closed or reset under the request before any answer came (hyper:
/// canceled, or "connection closed before message completed"; or a reset / broken pipe
/// while writing). A refused connection, a timeout, or an answer hyper could not parse
/// is something else: the app is unreachable or broken, and sending the request again
/// would only repeat it.
fn closed_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    if e.is_connect() {
        return false;
    }
    let mut cur = e.source();
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_incomplete_message() {
                return true;
            }
            if h.is_parse() || h.is_parse_status() || h.is_timeout() || h.is_user() {
                return false;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        cur = err.source();
    }
    false
}

/// Why a plain request failed: on the pooled client, or on the fresh connection of the
/// one retry. An error type (not a retry policy): it carries what the 502 says.
enum ForwardError {
    Pooled(hyper_util::client::legacy::Error),
    Fresh(String),
}

impl ForwardError {
    fn is_connect(&self) -> bool {
        match self {
            ForwardError::Pooled(e) => e.is_connect(),
            ForwardError::Fresh(_) => false,
        }
    }

    fn reason(&self) -> String {
        match self {
            ForwardError::Pooled(e) => error_chain(e),
            ForwardError::Fresh(why) => why.clone(),
        }
    }
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Sends `req` over a new connection of its own (not the pool), for the one retry.
async fn send_on_fresh_connection(
    sidecar: &Sidecar,
    req: Request<Body>,
) -> Result<Response<Incoming>, ForwardError> {
    let stream = TcpStream::connect(sidecar.settings.upstream.addr)
        .await
        .map_err(|e| ForwardError::Fresh(e.to_string()))?;
    sockets::tune(&stream, sidecar.settings.upstream.tcp_keepalive);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ForwardError::Fresh(e.to_string()))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| ForwardError::Fresh(e.to_string()))
}

/// The same bodiless request again (method, target, version, headers), in origin form
/// for a connection of its own.
fn replay_of(parts: &http::request::Parts) -> Request<Body> {
    let mut req = Request::new(empty());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts
        .uri
        .path_and_query()
        .and_then(|p| Uri::try_from(p.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Counts an answer in `wsdrain_http_requests_total{code}` by its status class.
pub(super) fn count(sidecar: &Sidecar, status: StatusCode) {
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    sidecar
        .metrics
        .http_requests
        .with_label_values(&[class])
        .inc();
}

/// The innermost cause of a client error, which names what actually went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
