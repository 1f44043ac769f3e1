//! The body of a forwarded response as it streams to the client: counted while in
//! flight, cut at the drain's deadline, and — for a Server-Sent Events stream — ended
//! at an event boundary with a `retry:` hint when the drain (or `/shed`, or
//! `--max-connection-age`) reaches its turn.
//!
//! A plain response runs to its end however long the drain has left; only the deadline
//! stops it, and then it is cut (the client sees an incomplete body, never a clean end
//! that would pass for a whole one), counted in `wsdrain_http_responses_cut_total` and
//! logged with its path. An SSE stream is a registered connection: a close command
//! waits for the next event boundary ([`SseTracker`]), writes `retry: <hint>` and ends
//! the body cleanly (last chunk, or FIN for a close-delimited body, since every SSE
//! answer carries `Connection: close`). When the app goes away mid-stream, or the
//! deadline comes mid-event, the stream still ends cleanly with the hint, and the
//! client discards the incomplete event instead of receiving it cut.
//!
//! Flow: `forward` hands in the app's body with its in-flight guard (and, for SSE, the
//! registration); hyper pulls frames out of the [`Body`] this builds.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::body::{Body, BodyError};
use crate::hint;
use crate::in_flight::InFlightGuard;
use crate::log_limit::LogLimit;
use crate::registry::{Command, ConnHandle, Registration};
use crate::sse_tracker::SseTracker;
use crate::state::Sidecar;

/// A response cut at the drain's deadline (what hyper is told, so it aborts the
/// client connection instead of ending the body as if it were complete).
#[derive(Debug, thiserror::Error)]
#[error("response cut at the drain deadline")]
pub struct CutAtDeadline;

/// An SSE stream's place in the drain: registered (closed on schedule), or refused
/// (the drain had already sealed the registry, or `--max-connections` are open) and so
/// ended at once with a hint.
struct SseSlot {
    sidecar: Arc<Sidecar>,
    registration: Option<Registration>,
    tracker: SseTracker,
    /// The hint of a close that waits for the next event boundary.
    closing: Option<u32>,
}

impl Drop for SseSlot {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            self.sidecar.metrics.sse_active.dec();
            // Counted while still registered, and taken out of the registry, as a
            // relay's end is.
            self.sidecar.drain.connection_ended(registration);
        }
    }
}

/// What the body does next.
enum Next {
    /// Relay the app's frames.
    Stream,
    /// Write these bytes, then end.
    Last(Bytes),
    /// Ended.
    Done,
}

struct Forwarded {
    sidecar: Arc<Sidecar>,
    inner: Incoming,
    cut: watch::Receiver<bool>,
    path: Box<str>,
    sse: Option<SseSlot>,
    next: Next,
    _guard: InFlightGuard,
}

/// A plain response body: counted, and cut at the deadline.
pub fn plain(sidecar: Arc<Sidecar>, inner: Incoming, guard: InFlightGuard, path: &str) -> Body {
    build(sidecar, inner, guard, path, None)
}

/// An SSE response body: a registered connection in the drain plan (`registration`),
/// or, with `None`, a stream the drain has no place for, ended at once with a hint.
pub fn sse(
    sidecar: Arc<Sidecar>,
    inner: Incoming,
    guard: InFlightGuard,
    path: &str,
    registration: Option<Registration>,
) -> Body {
    let mut slot = SseSlot {
        sidecar: sidecar.clone(),
        registration,
        tracker: SseTracker::new(),
        closing: None,
    };
    if slot.registration.is_some() {
        sidecar.metrics.sse_active.inc();
    } else {
        slot.closing = Some(hint::next_in_sequence(sidecar.relay.drain.reconnect_jitter));
    }
    build(sidecar, inner, guard, path, Some(slot))
}

fn build(
    sidecar: Arc<Sidecar>,
    inner: Incoming,
    guard: InFlightGuard,
    path: &str,
    sse: Option<SseSlot>,
) -> Body {
    let state = Forwarded {
        cut: sidecar.http.cut_signal(),
        sidecar,
        inner,
        path: path.into(),
        sse,
        next: Next::Stream,
        _guard: guard,
    };
    let frames = futures_util::stream::unfold(state, |mut s| async move {
        let frame = s.next_frame().await?;
        Some((frame, s))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Resolves with the command and hint once `handle` has a command this body has not
/// acted on: a close (unless one is already waiting for a boundary) or an abort.
pub(super) async fn command(handle: &ConnHandle, closing: bool) -> (Command, u32) {
    poll_fn(|cx| {
        let (command, hint) = handle.poll_command(cx);
        match command {
            Command::None => Poll::Pending,
            Command::Close if closing => Poll::Pending,
            Command::Close | Command::Abort => Poll::Ready((command, hint)),
        }
    })
    .await
}

impl Forwarded {
    async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, BodyError>> {
        match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => return None,
            Next::Last(bytes) => return Some(Ok(self.out(bytes))),
            Next::Stream => self.next = Next::Stream,
        }
        // A stream refused a place in the drain ends at its first boundary, which for
        // a fresh stream is its start.
        if let Some(sse) = &mut self.sse
            && let Some(hint_ms) = sse.closing
            && sse.tracker.at_boundary()
        {
            return self.end_sse(hint_ms);
        }
        loop {
            let handle = self
                .sse
                .as_ref()
                .and_then(|s| Some((s.registration.as_ref()?.handle.clone(), s.closing)));
            let commanded = async {
                match &handle {
                    Some((h, closing)) => command(h, closing.is_some()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Ok(()) = async { self.cut.wait_for(|cut| *cut).await.map(drop) } => {
                    return self.at_deadline(None);
                }
                (command, hint_ms) = commanded => match command {
                    Command::Abort => return self.at_deadline(Some(hint_ms)),
                    _ => {
                        if let Some(sse) = &mut self.sse {
                            if sse.tracker.at_boundary() {
                                return self.end_sse(hint_ms);
                            }
                            debug!("SSE close waits for the next event boundary");
                            sse.closing = Some(hint_ms);
                        }
                    }
                },
                frame = self.inner.frame() => return self.relay(frame),
            }
        }
    }

    /// One frame from the app, on its way to the client.
    fn relay(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
    ) -> Option<Result<Frame<Bytes>, BodyError>> {
        let frame = match frame {
            None => {
                self.next = Next::Done;
                return None;
            }
            Some(Err(e)) => {
                if self.sse.is_some() {
                    debug!(error = %e, "the app went away mid-stream; ending the SSE stream with a hint");
                    let hint_ms = hint::next_in_sequence(self.sidecar.relay.drain.reconnect_jitter);
                    return self.end_sse(hint_ms);
                }
                self.next = Next::Done;
                return Some(Err(e.into()));
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(trailers) => return Some(Ok(trailers)),
        };
        if let Some(sse) = &mut self.sse {
            match sse.closing {
                Some(hint_ms) => {
                    if let Some(n) = sse.tracker.next_boundary(&data) {
                        self.next = Next::Last(sse.tracker.closing_suffix(hint_ms));
                        return Some(Ok(self.out(data.slice(..n))));
                    }
                }
                None => sse.tracker.feed(&data),
            }
        }
        Some(Ok(self.out(data)))
    }

    fn out(&self, data: Bytes) -> Frame<Bytes> {
        self.sidecar
            .metrics
            .http_bytes_out
            .inc_by(data.len() as u64);
        Frame::data(data)
    }

    /// Ends an SSE stream with the hint: at a boundary `retry:` and a blank line;
    /// elsewhere the open event is left undelivered (see [`SseTracker::closing_suffix`]).
    fn end_sse(&mut self, hint_ms: u32) -> Option<Result<Frame<Bytes>, BodyError>> {
        let suffix = self.sse.as_ref()?.tracker.closing_suffix(hint_ms);
        self.next = Next::Done;
        Some(Ok(self.out(suffix)))
    }

    /// The deadline came: an SSE stream ends with its hint (an open event is dropped
    /// and counted as cut); any other response is cut.
    fn at_deadline(&mut self, hint_ms: Option<u32>) -> Option<Result<Frame<Bytes>, BodyError>> {
        static LIMIT: LogLimit = LogLimit::new();
        let mid_event = self.sse.as_ref().is_none_or(|s| !s.tracker.at_boundary());
        if mid_event {
            self.sidecar.metrics.http_cut.inc();
            if let Some(folded) = LIMIT.allow() {
                warn!(path = %self.path, folded, "response cut at the drain deadline");
            }
        }
        if self.sse.is_some() {
            let hint_ms = hint_ms.unwrap_or_else(|| {
                hint::next_in_sequence(self.sidecar.relay.drain.reconnect_jitter)
            });
            return self.end_sse(hint_ms);
        }
        self.next = Next::Done;
        Some(Err(Box::new(CutAtDeadline)))
    }
}
