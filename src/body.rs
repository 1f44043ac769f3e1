//! The one response body type the proxy and the admin port hand to hyper: either the
//! app's streamed body or a small body of wsdrain's own.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// A boxed HTTP body.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body with fixed content.
pub fn full(content: impl Into<Bytes>) -> Body {
    Full::new(content.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}
