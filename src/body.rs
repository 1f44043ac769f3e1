//! The one response body type the proxy and the admin port hand to hyper: either the
//! app's streamed body or a small body of wsdrain's own.
//!
//! Flow: built by the proxy's handlers, the admin port and the webhook; consumed by hyper.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Why a body stopped early: hyper's own error, or wsdrain cutting a response at the
/// drain's deadline.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed HTTP body. Not `Sync`: hyper never shares a body between threads, and the
/// proxy's response bodies are async state machines.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A body with fixed content.
pub fn full(content: impl Into<Bytes>) -> Body {
    Full::new(content.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from hyper (the app's answer, a client's request) as a [`Body`].
pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(BodyError::from).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A response of wsdrain's own: `status`, `content_type`, a fixed body. Shared by the
/// proxy's refusals, the admin port and the webhook.
pub fn response(
    status: hyper::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A one-line plain-text answer.
pub fn plain(status: hyper::StatusCode, text: impl std::fmt::Display) -> hyper::Response<Body> {
    response(status, "text/plain; charset=utf-8", format!("{text}\n"))
}
