//! Plain HTTP requests (anything that is not a WebSocket upgrade) reverse-proxied to the
//! app over a pooled keep-alive client, bodies streamed both ways.
//!
//! During a drain these keep working, with `Connection: close` on every answer so
//! keep-alive clients move to another pod.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, body::Incoming};
use tokio::time::timeout;
use tracing::warn;

use super::{Shared, answer, headers};
use crate::body::Body;

/// Forwards one request from `peer` to the app.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let upstream = shared.opts.upstream;
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match Uri::try_from(format!("http://{upstream}{path}")) {
        Ok(uri) => uri,
        Err(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "wsdrain: invalid request target".into(),
            );
        }
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarded(&mut parts.headers, peer);
    let request = shared.client.request(Request::from_parts(parts, body));
    let mut resp = match timeout(shared.opts.response_timeout, request).await {
        Ok(Ok(resp)) => {
            shared.metrics.upstream_up.set(1);
            resp.map(|b| b.boxed())
        }
        Ok(Err(e)) => {
            warn!(%upstream, error = %e, "plain HTTP request to the app failed");
            shared.metrics.error("upstream_http");
            if e.is_connect() {
                shared.metrics.upstream_up.set(0);
            }
            let resp = answer(
                StatusCode::BAD_GATEWAY,
                format!(
                    "wsdrain: upstream {upstream} unreachable: {}",
                    error_chain(&e)
                ),
            );
            count(&shared, resp.status());
            return resp;
        }
        Err(_) => {
            warn!(%upstream, "the app did not answer a plain HTTP request in time");
            shared.metrics.error("upstream_timeout");
            let resp = answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!("wsdrain: upstream {upstream} did not answer within --response-timeout"),
            );
            count(&shared, resp.status());
            return resp;
        }
    };
    headers::strip_hop_by_hop(resp.headers_mut());
    if shared.drain.is_draining() {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    count(&shared, resp.status());
    resp
}

fn count(shared: &Shared, status: StatusCode) {
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    shared
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
