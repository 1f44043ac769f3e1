//! One direction of a relayed connection: the buffering, the socket I/O and the feeding
//! of the [`FrameTracker`], apart from the close choreography that decides what to do.
//!
//! Data flows in from the source socket (readiness first, then a read into a buffer
//! borrowed from [`buffer_pool`] only while bytes move), through the tracker (which says
//! how much may be forwarded and what happened), and out to the destination socket,
//! with at most one frame of wsdrain's own ([`Injection`]) put in at a boundary.
//! What the connection has to decide on comes out as a [`PumpEvent`]; the decisions come
//! back in as intents ([`Pump::want_inject`], [`Pump::swallow_next_close`],
//! [`Pump::shutdown_after_flush`], [`Pump::abandon`], ...), never as fields set from
//! outside. The sockets are [`Transport`]s: plaintext TCP or TLS, the pump does not know.

use std::io;
use std::task::{Context, Poll, ready};

use tracing::debug;

use super::transport::Transport;
use super::{PING_PAYLOAD, RelaySettings};
use crate::buffer_pool;
use crate::frame_tracker::{Event, FrameTracker, StopAt, control_payload};
use crate::metrics::DirectionMetrics;

/// Something a pump needs the connection to decide on.
#[derive(Debug)]
pub(super) enum PumpEvent {
    /// A close frame from the source (forwarded, or withheld when swallowing).
    Close(Option<u16>),
    /// wsdrain's own close frame (with this code) has been written to the destination.
    Injected(u16),
    /// wsdrain's own ping has been written to the destination socket.
    PingSent,
    /// A pong answering wsdrain's ping was withheld from the destination.
    PongSwallowed,
    /// The source sent a message over the size limit.
    TooBig,
    /// The source closed its side.
    Eof,
    /// Reading the source failed (reset): treated like EOF.
    ReadError,
    /// Writing to the destination failed: it is gone.
    WriteError,
}

/// The longest run of bytes that can wait for more: a whole control frame (header of at
/// most 14 bytes, payload of at most 125), one byte short of complete.
const TAIL_MAX: usize = 14 + 125;

/// One direction of a relay.
///
/// Buffer layout while a buffer is borrowed: `[pos..fwd)` is cleared for writing,
/// `[fwd..scanned)` was accounted for and is dropped, `[scanned..filled)` waits for
/// more bytes (an incomplete header or control frame). When the source goes quiet with
/// such a tail, the tail moves to `tail` and the buffer goes back to the pool, so an idle
/// connection holds no buffer whatever byte it stopped at. The tail is a small heap
/// slice of exactly its length rather than an inline `[u8; 139]`: inline, every
/// connection would pay 2 × 139 bytes, idle or not (3.03 KiB per idle connection
/// measured, over the 3 KiB budget); boxed, only a connection parked mid-header pays,
/// and only its few bytes.
pub(super) struct Pump {
    tracker: FrameTracker,
    buf: Option<buffer_pool::Buf>,
    /// The waiting tail while no buffer is borrowed, fed to the tracker again ahead of
    /// the next read.
    tail: Option<Box<[u8]>>,
    pos: usize,
    fwd: usize,
    scanned: usize,
    filled: usize,
    /// A frame of wsdrain's own being written.
    inject: Vec<u8>,
    inject_pos: usize,
    /// A control frame of wsdrain's own to write at the next boundary of kind `stop`.
    want: Option<Injection>,
    stop: StopAt,
    /// Everything from the source is accounted for but no longer written.
    discard: bool,
    /// Withhold the next close frame from the source and start discarding.
    swallow_close: bool,
    /// Shut the destination's write side once everything queued is written.
    shutdown_after_flush: bool,
    read_done: bool,
    write_done: bool,
    eof_reported: bool,
    event: Option<PumpEvent>,
    /// WebSocket framing; false in TCP mode.
    framed: bool,
    /// Bytes arrived from the source since the relay last looked (liveness).
    got_bytes: bool,
    /// A protocol violation was logged for this direction already.
    violation_logged: bool,
}

/// A control frame of wsdrain's own, waiting for a boundary in the stream.
#[derive(Debug)]
enum Injection {
    /// A close frame with its code: the stream to the destination ends there.
    Close { frame: Vec<u8>, code: u16 },
    /// A liveness ping: the stream goes on after it.
    Ping(Vec<u8>),
}

impl Pump {
    pub(super) fn new(settings: &RelaySettings, early: &[u8], tracker: FrameTracker) -> Self {
        let mut pump = Pump {
            tracker,
            buf: None,
            tail: None,
            pos: 0,
            fwd: 0,
            scanned: 0,
            filled: 0,
            inject: Vec::new(),
            inject_pos: 0,
            want: None,
            stop: StopAt::Never,
            discard: false,
            swallow_close: false,
            shutdown_after_flush: false,
            read_done: false,
            write_done: false,
            eof_reported: false,
            event: None,
            framed: settings.framed,
            got_bytes: false,
            violation_logged: false,
        };
        if !early.is_empty() {
            let mut buf = buffer_pool::take_at_least(early.len());
            buf[..early.len()].copy_from_slice(early);
            pump.filled = early.len();
            pump.buf = Some(buf);
        }
        pump
    }

    /// Queues a close frame of wsdrain's own for the next boundary of kind `stop`.
    pub(super) fn want_inject(&mut self, frame: Vec<u8>, code: u16, stop: StopAt) {
        self.want = Some(Injection::Close { frame, code });
        self.stop = stop;
    }

    /// Queues a liveness ping for the next frame boundary.
    pub(super) fn want_ping(&mut self, frame: Vec<u8>) {
        self.want = Some(Injection::Ping(frame));
        self.stop = StopAt::FrameEnd;
    }

    /// Drops a frame of ours still waiting for a boundary (a peer's close went first).
    pub(super) fn cancel_injection(&mut self) {
        self.want = None;
    }

    /// True while a frame of ours waits for a boundary.
    pub(super) fn injection_waiting(&self) -> bool {
        self.want.is_some()
    }

    /// A waiting frame of ours may go in at the next frame boundary, not only at the
    /// end of a message.
    pub(super) fn settle_for_frame_end(&mut self) {
        self.stop = StopAt::FrameEnd;
    }

    /// Withholds the source's next close frame from the destination, and discards
    /// everything from the source after it (a close reply wsdrain answers itself).
    pub(super) fn swallow_next_close(&mut self) {
        self.swallow_close = true;
    }

    /// Ends the destination's write side once everything queued for it is written.
    pub(super) fn shutdown_after_flush(&mut self) {
        self.shutdown_after_flush = true;
    }

    /// True once bytes from the source are accounted for but no longer written.
    pub(super) fn discarding(&self) -> bool {
        self.discard
    }

    /// True once nothing more can be written to the destination.
    pub(super) fn write_closed(&self) -> bool {
        self.write_done
    }

    /// True when the source's stream stands between two frames.
    pub(super) fn at_frame_boundary(&self) -> bool {
        self.tracker.at_frame_boundary()
    }

    /// Whether bytes arrived from the source since the last call (liveness).
    pub(super) fn take_got_bytes(&mut self) -> bool {
        std::mem::take(&mut self.got_bytes)
    }

    /// The destination is gone: stop writing, keep reading to see the source's end.
    pub(super) fn abandon(&mut self) {
        self.write_done = true;
        self.discard = true;
        self.want = None;
    }

    /// The source is taken for dead: stop waiting for its bytes.
    pub(super) fn stop_reading(&mut self) {
        self.read_done = true;
        self.eof_reported = true;
    }

    pub(super) fn finished(&self) -> bool {
        self.read_done && self.write_done && self.event.is_none()
    }

    /// Writes what is queued. Ready(Ok) when nothing is left to write.
    fn poll_flush<D: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut D,
        m: &DirectionMetrics,
    ) -> Poll<io::Result<()>> {
        if self.write_done {
            self.pos = self.fwd;
            self.inject_pos = self.inject.len();
            return Poll::Ready(Ok(()));
        }
        while self.pos < self.fwd {
            let Some(buf) = self.buf.as_deref() else {
                break;
            };
            let n = ready!(dst.poll_write(cx, &buf[self.pos..self.fwd]))?;
            self.pos += n;
            m.bytes.inc_by(n as u64);
        }
        while self.inject_pos < self.inject.len() {
            let n = ready!(dst.poll_write(cx, &self.inject[self.inject_pos..]))?;
            self.inject_pos += n;
        }
        dst.poll_flush(cx)
    }

    /// After a flush: skips dropped bytes, moves a waiting tail to the front, and gives
    /// the buffer back when it holds nothing.
    fn compact(&mut self) {
        let Some(buf) = self.buf.as_mut() else { return };
        self.pos = self.scanned;
        self.fwd = self.scanned;
        if self.scanned == self.filled {
            self.release();
        } else if self.scanned > 0 {
            buf.copy_within(self.scanned..self.filled, 0);
            self.filled -= self.scanned;
            self.pos = 0;
            self.fwd = 0;
            self.scanned = 0;
        }
    }

    /// The source has nothing more for now: if all that the buffer still holds is a
    /// waiting tail, the tail moves to `tail` and the buffer goes back to the pool. Called
    /// after [`Pump::compact`], when nothing is left to write.
    fn park(&mut self) {
        let Some(buf) = self.buf.as_deref() else {
            return;
        };
        let waiting = self.filled - self.scanned;
        if self.pos != self.scanned || self.fwd != self.scanned || waiting > TAIL_MAX {
            return;
        }
        self.tail = (waiting > 0).then(|| buf[self.scanned..self.filled].into());
        self.release();
    }

    /// Gives the buffer back to the pool; nothing of it is still needed.
    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            buffer_pool::give(b);
        }
        self.pos = 0;
        self.fwd = 0;
        self.scanned = 0;
        self.filled = 0;
    }

    /// Makes sure a buffer is borrowed to read into: the one held, or a fresh one from
    /// the pool with the parked tail put back in front.
    fn unpark(&mut self) {
        if self.buf.is_some() {
            return;
        }
        let mut buf = buffer_pool::take();
        let tail = self.tail.take().unwrap_or_default();
        let n = tail.len();
        buf[..n].copy_from_slice(&tail);
        self.pos = 0;
        self.fwd = 0;
        self.scanned = 0;
        self.filled = n;
        self.buf = Some(buf);
    }

    /// Feeds unscanned bytes to the tracker. True when anything changed.
    fn scan(&mut self, m: &DirectionMetrics) -> bool {
        let Some(buf) = self.buf.as_deref() else {
            return false;
        };
        let base = self.scanned;
        if !self.framed {
            let progressed = self.filled > base;
            if !self.discard {
                self.fwd = self.filled;
            }
            self.scanned = self.filled;
            return progressed;
        }
        let stop = if self.want.is_some() && !self.write_done {
            self.stop
        } else {
            StopAt::Never
        };
        let feed = self.tracker.feed(&buf[base..self.filled], stop);
        let end = base + feed.consumed;
        if self.discard {
            m.dropped_frames.inc_by(u64::from(feed.data_frames));
        } else {
            m.messages.inc_by(u64::from(feed.messages));
        }
        if feed.violations > 0 {
            m.violations.inc_by(u64::from(feed.violations));
            if !std::mem::replace(&mut self.violation_logged, true) {
                debug!("relaying a frame that breaks RFC 6455, for the peer to judge");
            }
        }
        match feed.event {
            Event::Close { start, code } => {
                if !self.discard {
                    if self.swallow_close {
                        self.fwd = base + start;
                        self.discard = true;
                    } else {
                        self.fwd = end;
                    }
                }
                self.event = Some(PumpEvent::Close(code));
            }
            Event::TooBig => {
                if !self.discard {
                    self.fwd = end;
                }
                // Past the offending header only discarding remains; keep parsing.
                self.tracker.disable_limit();
                self.event = Some(PumpEvent::TooBig);
            }
            Event::Pong { start } => {
                let ours = control_payload(&buf[base + start..end]) == PING_PAYLOAD;
                if !self.discard {
                    self.fwd = if ours { base + start } else { end };
                }
                if ours {
                    self.event = Some(PumpEvent::PongSwallowed);
                }
            }
            Event::Boundary | Event::None => {
                if !self.discard {
                    self.fwd = end;
                }
            }
        }
        self.scanned = end;
        feed.consumed > 0 || feed.event != Event::None
    }

    pub(super) fn poll_pump<S: Transport, D: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        m: &DirectionMetrics,
    ) -> Poll<PumpEvent> {
        loop {
            match self.poll_flush(cx, dst, m) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    self.write_done = true;
                    self.discard = true;
                    self.want = None;
                    return Poll::Ready(PumpEvent::WriteError);
                }
                Poll::Ready(Ok(())) => {}
            }
            self.compact();
            if !self.inject.is_empty() {
                self.inject = Vec::new();
                self.inject_pos = 0;
            }
            if let Some(ev) = self.event.take() {
                return Poll::Ready(ev);
            }
            if let Some(injection) = self.want.take_if(|_| {
                !self.write_done
                    && match self.stop {
                        StopAt::MessageEnd => self.tracker.at_message_boundary(),
                        _ => self.tracker.at_frame_boundary(),
                    }
            }) {
                self.inject_pos = 0;
                self.stop = StopAt::Never;
                self.event = Some(match injection {
                    Injection::Close { frame, code } => {
                        self.inject = frame;
                        // After our close, nothing more may reach this destination.
                        self.discard = true;
                        PumpEvent::Injected(code)
                    }
                    Injection::Ping(frame) => {
                        self.inject = frame;
                        PumpEvent::PingSent
                    }
                });
                continue;
            }
            if self.shutdown_after_flush && !self.write_done && self.want.is_none() {
                // A failed shutdown leaves nothing to do: the destination is gone.
                ready!(dst.poll_shutdown(cx)).ok();
                self.write_done = true;
            }
            if self.scanned < self.filled && self.scan(m) {
                continue;
            }
            if self.read_done {
                if !self.eof_reported {
                    self.eof_reported = true;
                    return Poll::Ready(PumpEvent::Eof);
                }
                self.park();
                return Poll::Pending;
            }
            match src.poll_read_ready(cx) {
                Poll::Pending => {
                    // Idle from here on: keep no buffer, whatever byte the source stopped at.
                    self.park();
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => {
                    self.read_done = true;
                    self.eof_reported = true;
                    return Poll::Ready(PumpEvent::ReadError);
                }
                Poll::Ready(Ok(())) => {}
            }
            self.unpark();
            let buf = self.buf.get_or_insert_with(buffer_pool::take);
            if self.filled == buf.len() {
                // Cannot happen (a waiting tail is at most 139 bytes), but a full buffer
                // must never turn into a zero-length read that looks like EOF.
                buf.grow();
            }
            match src.try_read(&mut buf[self.filled..]) {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    self.filled += n;
                    self.got_bytes = true;
                    self.scan(m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.park(),
                Err(_) => {
                    self.read_done = true;
                    self.eof_reported = true;
                    return Poll::Ready(PumpEvent::ReadError);
                }
            }
        }
    }
}
