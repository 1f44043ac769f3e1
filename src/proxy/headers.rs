//! Header handling shared by both request paths: upgrade detection, hop-by-hop
//! stripping (RFC 9110 §7.6.1), the origin-form target (RFC 9112 §3.2.2) and the
//! `X-Forwarded-*` family.
//!
//! Both paths hand the app the same shape of request: origin-form target, `Host` from
//! the authority of an absolute-form target, no hop-by-hop header. The upgrade path
//! keeps only `Connection: Upgrade` + `Upgrade: websocket` (and any `Sec-WebSocket-*`
//! field, which the handshake needs even if a client named it in `Connection`): wsdrain
//! relays WebSocket and nothing else, so the app is never offered another protocol.
//!
//! `X-Forwarded-For` is appended to, so the chain from the ingress survives;
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are set only when absent, because the
//! ingress in front knows the original scheme and host better than the sidecar.

use std::net::SocketAddr;

use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, UPGRADE};
use hyper::{Request, Response, Uri};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// True for `Connection: upgrade` + `Upgrade: websocket` (tokens, any case).
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), &CONNECTION, "upgrade")
        && has_token(req.headers(), &UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Adds the `X-Forwarded-*` headers for a request from `peer`.
///
/// Every `X-Forwarded-For` line is kept, in order (RFC 9110 §5.3: several lines are one
/// comma-separated list), and the peer is appended last: a proxy in front that adds its
/// own line (HAProxy's `option forwardfor`) must not lose its entry to whatever the
/// client put in the first line.
pub fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr) {
    let mut xff: Vec<u8> = Vec::new();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            xff.extend_from_slice(line);
            xff.extend_from_slice(b", ");
        }
    }
    xff.extend_from_slice(peer.ip().to_string().as_bytes());
    // Every part is a valid header value already, so the join is one too; the peer
    // alone is the fallback should that ever not hold.
    let value =
        HeaderValue::from_bytes(&xff).or_else(|_| HeaderValue::from_str(&peer.ip().to_string()));
    if let Ok(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_hop_by_hop_except(headers, |_| false);
}

/// [`strip_hop_by_hop`], keeping the headers `keep` says yes to even when `Connection`
/// names them.
fn strip_hop_by_hop_except(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !keep(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Turns the request target into origin form (path and query) for the app. An
/// absolute-form target (`GET http://host/ws`) also replaces `Host` with its authority,
/// as RFC 9112 §3.2.2 requires of a server and of a proxy forwarding it.
pub fn to_origin_form(uri: &mut Uri, headers: &mut HeaderMap) {
    // Host is the authority without any userinfo (RFC 9110 §7.2).
    if let Some(authority) = uri.authority()
        && let Some(host) = authority.as_str().rsplit('@').next()
        && let Ok(host) = HeaderValue::from_str(host)
    {
        headers.insert(HOST, host);
    }
    if uri.authority().is_some() || uri.scheme().is_some() {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
}

/// Prepares an upgrade request for the app: origin form, hop-by-hop headers removed,
/// and the offer narrowed to `Connection: Upgrade` + `Upgrade: websocket` even when the
/// client offered more (`Upgrade: h2c, websocket`), so the app cannot switch to a
/// protocol wsdrain would then parse as WebSocket frames.
pub fn prepare_upgrade(parts: &mut http::request::Parts) {
    to_origin_form(&mut parts.uri, &mut parts.headers);
    strip_hop_by_hop_except(&mut parts.headers, |name| {
        name.as_str().starts_with("sec-websocket-")
    });
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    parts
        .headers
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// True when the app's 101 switches to WebSocket: `Upgrade: websocket` and a
/// `Connection` that lists `upgrade` (RFC 6455 §4.1, what a client checks). Anything
/// else is not relayed: it would be some other protocol parsed as frames.
pub fn is_websocket_switch<B>(resp: &Response<B>) -> bool {
    let upgrade = resp.headers().get_all(UPGRADE).iter().collect::<Vec<_>>();
    upgrade.len() == 1
        && upgrade[0]
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && has_token(resp.headers(), &CONNECTION, "upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(target: &str, host: &str) -> (String, String) {
        let mut uri: Uri = target.parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(host).expect("host"));
        to_origin_form(&mut uri, &mut headers);
        let host = headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (uri.to_string(), host)
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host_from_the_authority() {
        assert_eq!(
            origin("http://other:8080/ws?a=1", "sent"),
            ("/ws?a=1".into(), "other:8080".into())
        );
        assert_eq!(
            origin("http://user:pw@other/x", "sent"),
            ("/x".into(), "other".into())
        );
        assert_eq!(origin("http://other", "sent"), ("/".into(), "other".into()));
        assert_eq!(origin("/ws", "sent"), ("/ws".into(), "sent".into()));
    }
}
