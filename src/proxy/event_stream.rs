//! Server-Sent Events streams served on the raw sockets, off hyper, so that an idle
//! stream costs what an idle WebSocket costs.
//!
//! hyper keeps about 16 KiB of buffers for the whole life of an HTTP/1.1 connection
//! (its read buffer and its header buffer), and a stream proxied through hyper holds two
//! such connections: about 35 KiB per idle SSE stream, where a WebSocket's relay borrows
//! a buffer from [`crate::buffer_pool`] only while bytes move. An `EventSource` request
//! is simple and always looks the same, so it is served here with no HTTP machinery
//! kept: a plaintext connection whose *first* request is a bodiless `GET` over
//! HTTP/1.1 that accepts `text/event-stream` (every `EventSource` sends that), with its
//! head whole in the first read, is taken off hyper. Anything else (TLS, a request with
//! a body, an SSE request after others on a keep-alive connection) stays with hyper and
//! [`super::response`], as before.
//!
//! The request goes to the app on a connection of its own with `Connection: close`,
//! shaped like every forwarded one (origin form, hop-by-hop headers removed,
//! `X-Forwarded-*`). An answer that is an event stream (200, no `Content-Encoding`) is
//! a registered connection in the drain, exactly as through hyper: its close waits for
//! an event boundary and adds `retry: <hint>`; the body goes to the client
//! close-delimited (de-chunked by [`crate::dechunk`]), so the hint can go in anywhere.
//! Any other answer (a 204 that stops the client, a 401, a redirect) is relayed as it
//! came, framing and all, and the connection closes after it.
//!
//! Flow: `proxy::serve` asks [`first_request`] before it hands a connection to hyper;
//! [`serve`] reads the head, asks the app, and pumps until the stream ends.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{Instrument, Span, debug, warn};

use super::forward::{count, is_compressed, is_event_stream};
use super::headers;
use super::response::command;
use crate::buffer_pool;
use crate::connection::{ClientAddrs, connect_app};
use crate::dechunk::{Dechunk, Malformed};
use crate::hint;
use crate::in_flight::InFlightGuard;
use crate::log_limit::LogLimit;
use crate::metrics::{ErrorKind, Rejection};
use crate::registry::{Command, Registration};
use crate::sse_tracker::SseTracker;
use crate::state::Sidecar;

/// Most header lines a request or answer on this path may have; more goes to hyper (a
/// request) or is refused as a bad answer (the app's).
const MAX_HEADERS: usize = 64;

/// The length of the connection's first request head when that request is one this
/// module serves (see the module docs), peeked without consuming anything; `None` for
/// everything else, which hyper then reads from the first byte. Waits until the client
/// has sent something; the caller bounds the wait.
pub async fn first_request(stream: &TcpStream, max_head: usize) -> Option<usize> {
    stream.readable().await.ok()?;
    let mut buf = buffer_pool::take();
    let limit = max_head.min(buf.len());
    let peeked = poll_fn(|cx| {
        let mut read = ReadBuf::new(&mut buf[..limit]);
        match stream.poll_peek(cx, &mut read) {
            Poll::Ready(Ok(_)) => Poll::Ready(Some(read.filled().len())),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    is_event_stream_request(&buf[..peeked])
}

/// The head's length if `bytes` start with a whole request head this module serves.
fn is_event_stream_request(bytes: &[u8]) -> Option<usize> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let httparse::Status::Complete(len) = req.parse(bytes).ok()? else {
        return None;
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let mut accepts = false;
    for h in req.headers.iter() {
        let name = h.name;
        if ["content-length", "transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        if name.eq_ignore_ascii_case("accept") {
            accepts |= String::from_utf8_lossy(h.value).split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("text/event-stream")
            });
        }
    }
    accepts.then_some(len)
}

/// Why the app's answer could not be read.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("closed the connection before answering")]
    Closed,
    #[error("sent an answer that does not parse: {0}")]
    Parse(httparse::Error),
    #[error("sent an answer head over {0} bytes")]
    TooLarge(usize),
}

/// The app's answer head, parsed.
struct AnswerHead {
    status: StatusCode,
    reason: String,
    headers: HeaderMap,
    /// The head's length in the bytes read.
    len: usize,
}

/// How the app's answer body is framed.
enum Framing {
    Chunked(Dechunk),
    Length(u64),
    /// Until the app closes.
    Close,
}

impl Framing {
    fn of(head: &AnswerHead) -> Framing {
        let chunked = head
            .headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        if head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
            return Framing::Length(0);
        }
        if chunked {
            return Framing::Chunked(Dechunk::new());
        }
        match head
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
        {
            Some(len) => Framing::Length(len),
            None => Framing::Close,
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Framing::Chunked(d) => d.is_done(),
            Framing::Length(left) => *left == 0,
            Framing::Close => false,
        }
    }

    /// Keeps the body's data of `buf[..n]` at its front (de-chunked) and returns its
    /// length.
    fn body_data(&mut self, buf: &mut [u8], n: usize) -> Result<usize, Malformed> {
        match self {
            Framing::Chunked(d) => {
                let mut kept = 0;
                let mut runs = Vec::new();
                d.feed(&buf[..n], |r| runs.push(r))?;
                for r in runs {
                    let len = r.len();
                    buf.copy_within(r, kept);
                    kept += len;
                }
                Ok(kept)
            }
            Framing::Length(left) => {
                let take = (*left).min(n as u64);
                *left -= take;
                Ok(take as usize)
            }
            Framing::Close => Ok(n),
        }
    }
}

/// Serves one connection whose first request [`first_request`] took (`head_len` bytes
/// of head): to the app and back, as the module docs say. The connection ends with it.
pub async fn serve(
    sidecar: Arc<Sidecar>,
    mut client: TcpStream,
    head_len: usize,
    addrs: ClientAddrs,
    id: u64,
) {
    let mut head = vec![0u8; head_len];
    if client.read_exact(&mut head).await.is_err() {
        return;
    }
    let in_flight = sidecar.http.enter();
    let Some((request, path)) = upstream_request(&head, addrs) else {
        // It parsed when peeked; a target that is not a URI gets what hyper's path gives.
        let _ = write_plain(
            &mut client,
            StatusCode::BAD_REQUEST,
            "wsdrain: invalid request target",
        )
        .await;
        return;
    };
    drop(head);
    let mut cut = sidecar.http.cut_signal();
    let asked = async {
        let mut app = connect_app(&sidecar.settings.upstream, &sidecar.metrics, addrs)
            .await
            .map_err(|e| e.to_string())?;
        app.write_all(&request).await.map_err(|e| e.to_string())?;
        drop(request);
        let (answer, early) = read_answer(
            &mut app,
            sidecar.settings.client.max_header_size,
            &mut client,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((app, answer, early))
    };
    let answered = tokio::select! {
        answered = timeout(sidecar.settings.upstream.response_timeout, asked) => answered,
        () = deadline(&mut cut) => {
            sidecar.metrics.http_cut.inc();
            count(&sidecar, StatusCode::SERVICE_UNAVAILABLE);
            let _ = write_plain(&mut client, StatusCode::SERVICE_UNAVAILABLE, "wsdrain: the drain's deadline came before the app answered").await;
            return;
        }
    };
    let upstream = sidecar.settings.upstream.addr;
    let (app, answer, early) = match answered {
        Ok(Ok(answered)) => {
            sidecar.metrics.upstream_up.set(1);
            answered
        }
        Ok(Err(why)) => {
            static LIMIT: LogLimit = LogLimit::new();
            if let Some(folded) = LIMIT.allow() {
                warn!(%upstream, error = %why, folded, "event-stream request to the app failed");
            }
            sidecar.metrics.error(ErrorKind::UpstreamHttp);
            count(&sidecar, StatusCode::BAD_GATEWAY);
            let body = format!("wsdrain: upstream {upstream} unreachable: {why}");
            let _ = write_plain(&mut client, StatusCode::BAD_GATEWAY, &body).await;
            return;
        }
        Err(_) => {
            sidecar.metrics.error(ErrorKind::UpstreamTimeout);
            count(&sidecar, StatusCode::GATEWAY_TIMEOUT);
            let body =
                format!("wsdrain: upstream {upstream} did not answer within --response-timeout");
            let _ = write_plain(&mut client, StatusCode::GATEWAY_TIMEOUT, &body).await;
            return;
        }
    };
    count(&sidecar, answer.status);
    let framing = Framing::of(&answer);
    let sse = answer.status == StatusCode::OK
        && is_event_stream(&answer.headers)
        && !is_compressed(&answer.headers);
    if sse {
        // A task of its own, sized for the stream alone, not for the steps before it.
        let sidecar = sidecar.clone();
        let head = client_head(&answer, false);
        drop(answer);
        tokio::spawn(
            async move {
                stream_events(
                    &sidecar, client, app, head, framing, early, in_flight, &path, id,
                )
                .await;
            }
            .instrument(Span::current()),
        );
    } else {
        if is_event_stream(&answer.headers) && answer.status == StatusCode::OK {
            sidecar.metrics.sse_compressed.inc();
        }
        relay_answer(&sidecar, client, app, answer, framing, early, &path).await;
        drop(in_flight);
    }
}

/// The request for the app, and the path for logs; `None` for a target that is no URI.
fn upstream_request(head: &[u8], addrs: ClientAddrs) -> Option<(Vec<u8>, Box<str>)> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    req.parse(head).ok()?;
    let mut uri: Uri = req.path?.parse().ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len() + 3);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    headers::to_origin_form(&mut uri, &mut map);
    headers::strip_hop_by_hop(&mut map);
    headers::add_forwarded(&mut map, addrs.peer);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(head.len() + 128);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&mut out, &map);
    out.extend_from_slice(b"connection: close\r\n\r\n");
    Some((out, uri.path().into()))
}

fn write_headers(out: &mut Vec<u8>, map: &HeaderMap) {
    for (name, value) in map {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads the app's answer head (interim 1xx answers are passed to the client on the
/// way). Returns it with the body bytes read past it.
async fn read_answer(
    app: &mut TcpStream,
    max: usize,
    client: &mut TcpStream,
) -> Result<(AnswerHead, Vec<u8>), AnswerError> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    loop {
        let parsed = {
            let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut lines);
            match resp.parse(&buf).map_err(AnswerError::Parse)? {
                httparse::Status::Complete(len) => {
                    let status = StatusCode::from_u16(resp.code.unwrap_or(502))
                        .map_err(|_| AnswerError::Parse(httparse::Error::Status))?;
                    let mut headers = HeaderMap::with_capacity(resp.headers.len());
                    for h in resp.headers.iter() {
                        if let (Ok(name), Ok(value)) = (
                            HeaderName::from_bytes(h.name.as_bytes()),
                            HeaderValue::from_bytes(h.value),
                        ) {
                            headers.append(name, value);
                        }
                    }
                    Some(AnswerHead {
                        status,
                        reason: resp.reason.unwrap_or("").to_string(),
                        headers,
                        len,
                    })
                }
                httparse::Status::Partial => None,
            }
        };
        match parsed {
            Some(head)
                if head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                client.write_all(&buf[..head.len]).await?;
                buf.drain(..head.len);
                continue;
            }
            Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(AnswerError::Parse(httparse::Error::Status));
            }
            Some(head) => {
                let early = buf.split_off(head.len);
                return Ok((head, early));
            }
            None if buf.len() >= max => return Err(AnswerError::TooLarge(max)),
            None => {}
        }
        buf.reserve(2048);
        if app.read_buf(&mut buf).await? == 0 {
            return Err(AnswerError::Closed);
        }
    }
}

/// The answer head for the client: the app's status and headers, hop-by-hop ones
/// removed, `Connection: close`; `keep_chunked` when the body is relayed as it came.
fn client_head(answer: &AnswerHead, keep_chunked: bool) -> Vec<u8> {
    let mut headers = answer.headers.clone();
    headers::strip_hop_by_hop(&mut headers);
    if keep_chunked {
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    } else {
        headers.remove(CONTENT_LENGTH);
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", answer.status.as_u16(), answer.reason).as_bytes(),
    );
    write_headers(&mut out, &headers);
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// A short plain-text answer of wsdrain's own, then the connection closes.
async fn write_plain(
    client: &mut TcpStream,
    status: StatusCode,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len() + 1
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.write_all(b"\n").await?;
    client.shutdown().await
}

/// Writes `bytes` to the client unless the drain's deadline comes first. `false` when
/// the stream cannot go on (the client left, or the deadline cut it).
async fn write_or_cut(
    client: &mut TcpStream,
    bytes: &[u8],
    cut: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        written = client.write_all(bytes) => written.is_ok(),
        () = deadline(cut) => false,
    }
}

/// Resolves when the drain's deadline has come (never, should the signal be gone).
async fn deadline(cut: &mut watch::Receiver<bool>) {
    if cut.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A non-SSE answer, relayed as it came (its framing kept) until its body ends, the app
/// closes, or the deadline cuts it.
async fn relay_answer(
    sidecar: &Sidecar,
    mut client: TcpStream,
    app: TcpStream,
    answer: AnswerHead,
    mut framing: Framing,
    early: Vec<u8>,
    path: &str,
) {
    let keep_chunked = matches!(framing, Framing::Chunked(_));
    let mut cut = sidecar.http.cut_signal();
    if !write_or_cut(&mut client, &client_head(&answer, keep_chunked), &mut cut).await {
        return;
    }
    let mut pending = Some(early);
    loop {
        if framing.is_done() {
            let _ = client.shutdown().await;
            return;
        }
        let mut buf = buffer_pool::take();
        let n = match pending.take() {
            Some(early) if !early.is_empty() => {
                let n = early.len().min(buf.len());
                buf[..n].copy_from_slice(&early[..n]);
                if n < early.len() {
                    pending = Some(early[n..].to_vec());
                }
                n
            }
            _ => {
                drop(buf);
                tokio::select! {
                    ready = app.readable() => if ready.is_err() { return },
                    () = deadline(&mut cut) => return cut_at_deadline(sidecar, path),
                }
                buf = buffer_pool::take();
                match app.try_read(&mut buf) {
                    Ok(0) => {
                        if matches!(framing, Framing::Close) {
                            let _ = client.shutdown().await;
                        }
                        return;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
            }
        };
        // The bytes go out as they came; the framing is followed to see the end.
        let out = match &mut framing {
            Framing::Chunked(d) => {
                if d.feed(&buf[..n], |_| {}).is_err() {
                    return;
                }
                n
            }
            Framing::Length(left) => {
                let take = (*left).min(n as u64);
                *left -= take;
                take as usize
            }
            Framing::Close => n,
        };
        sidecar.metrics.http_bytes_out.inc_by(out as u64);
        if !write_or_cut(&mut client, &buf[..out], &mut cut).await {
            if *cut.borrow() {
                cut_at_deadline(sidecar, path);
            }
            return;
        }
    }
}

fn cut_at_deadline(sidecar: &Sidecar, path: &str) {
    static LIMIT: LogLimit = LogLimit::new();
    sidecar.metrics.http_cut.inc();
    if let Some(folded) = LIMIT.allow() {
        warn!(%path, folded, "response cut at the drain deadline");
    }
}

/// An event stream's place in the drain; gives it back when the stream ends.
struct Slot<'a> {
    sidecar: &'a Sidecar,
    registration: Option<Registration>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            self.sidecar.metrics.sse_active.dec();
            self.sidecar.drain.connection_ended(registration);
        }
    }
}

/// How an event stream ends.
enum End {
    /// The app ended the body: the client gets the end as it is.
    Complete,
    /// With `retry: <hint>`, at a boundary or (the app gone, the deadline) wherever the
    /// stream stands.
    Hint(u32),
    /// The client left, or writing to it failed: nothing more to send.
    Gone,
}

/// An event stream from the app to the client, in the drain plan: see the module docs.
#[allow(clippy::too_many_arguments)]
async fn stream_events(
    sidecar: &Arc<Sidecar>,
    mut client: TcpStream,
    app: TcpStream,
    head: Vec<u8>,
    mut framing: Framing,
    early: Vec<u8>,
    _in_flight: InFlightGuard,
    path: &str,
    id: u64,
) {
    let jitter = sidecar.relay.drain.reconnect_jitter;
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
    // A stream refused a place ends at its first boundary, its start.
    let mut closing = registration
        .is_none()
        .then(|| hint::next_in_sequence(jitter));
    if registration.is_some() {
        sidecar.metrics.sse_active.inc();
    }
    let slot = Slot {
        sidecar,
        registration,
    };
    let handle = slot.registration.as_ref().map(|r| r.handle.clone());
    let mut cut = sidecar.http.cut_signal();
    let mut tracker = SseTracker::new();
    if !write_or_cut(&mut client, &head, &mut cut).await {
        return;
    }
    drop(head);
    let mut early = Some(early).filter(|e| !e.is_empty());
    let end = loop {
        if let Some(hint_ms) = closing
            && tracker.at_boundary()
        {
            break End::Hint(hint_ms);
        }
        if framing.is_done() {
            break End::Complete;
        }
        let mut buf = buffer_pool::take();
        let n = if let Some(bytes) = early.take() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            if n < bytes.len() {
                early = Some(bytes[n..].to_vec());
            }
            n
        } else {
            drop(buf);
            let commanded = async {
                match &handle {
                    Some(h) => command(h, closing.is_some()).await,
                    None => std::future::pending().await,
                }
            };
            let mut peek = [0u8; 16];
            tokio::select! {
                biased;
                () = deadline(&mut cut) => {
                    if !tracker.at_boundary() {
                        cut_at_deadline(sidecar, path);
                    }
                    break End::Hint(closing.unwrap_or_else(|| hint::next_in_sequence(jitter)));
                }
                (command, hint_ms) = commanded => {
                    match command {
                        Command::Abort => {
                            if !tracker.at_boundary() {
                                sidecar.metrics.http_cut.inc();
                            }
                            break End::Hint(hint_ms);
                        }
                        _ => {
                            if !tracker.at_boundary() {
                                debug!("SSE close waits for the next event boundary");
                            }
                            closing = Some(hint_ms);
                            continue;
                        }
                    }
                }
                gone = client.read(&mut peek) => match gone {
                    // The client sent bytes after its request: nothing to do with them.
                    Ok(n) if n > 0 => continue,
                    _ => break End::Gone,
                },
                ready = app.readable() => {
                    if ready.is_err() {
                        break End::Hint(closing.unwrap_or_else(|| hint::next_in_sequence(jitter)));
                    }
                }
            }
            buf = buffer_pool::take();
            match app.try_read(&mut buf) {
                Ok(0) => {
                    if matches!(framing, Framing::Close) {
                        break End::Complete;
                    }
                    debug!("the app went away mid-stream; ending the SSE stream with a hint");
                    break End::Hint(closing.unwrap_or_else(|| hint::next_in_sequence(jitter)));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    debug!("the app went away mid-stream; ending the SSE stream with a hint");
                    break End::Hint(closing.unwrap_or_else(|| hint::next_in_sequence(jitter)));
                }
            }
        };
        let Ok(data) = framing.body_data(&mut buf, n) else {
            break End::Hint(closing.unwrap_or_else(|| hint::next_in_sequence(jitter)));
        };
        let mut out = data;
        if let Some(hint_ms) = closing {
            if let Some(upto) = tracker.next_boundary(&buf[..data]) {
                out = upto;
                sidecar.metrics.http_bytes_out.inc_by(out as u64);
                if !write_or_cut(&mut client, &buf[..out], &mut cut).await {
                    break End::Gone;
                }
                break End::Hint(hint_ms);
            }
        } else {
            tracker.feed(&buf[..data]);
        }
        sidecar.metrics.http_bytes_out.inc_by(out as u64);
        if !write_or_cut(&mut client, &buf[..out], &mut cut).await {
            break End::Gone;
        }
    };
    if let End::Hint(hint_ms) = end {
        let suffix: Bytes = tracker.closing_suffix(hint_ms);
        sidecar.metrics.http_bytes_out.inc_by(suffix.len() as u64);
        if !write_or_cut(&mut client, &suffix, &mut cut).await {
            return;
        }
    }
    // Out of the drain's books before the client sees the end, as a relay's close is.
    drop(slot);
    if !matches!(end, End::Gone) {
        let _ = client.shutdown().await;
    }
}
