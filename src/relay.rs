//! The relay: moves frames between a client and the app after the 101, and closes
//! connections gracefully when asked to.
//!
//! One task per connection drives two [`Pump`]s, one per direction, over the same pair
//! of sockets. Each pump waits for readiness, borrows a buffer only while bytes are in
//! flight, feeds them to a [`FrameTracker`] and writes what the tracker cleared. Because
//! the tracker knows where frames end, a pump can put a frame of wsdrain's own on the
//! wire at a boundary — the close frame with the reconnect hint — without ever cutting
//! a frame in half.
//!
//! The close choreography, when wsdrain initiates it (drain, message too big, app gone):
//! 1. the client gets a close frame at the next message boundary (or frame boundary if
//!    no message boundary comes within [`MESSAGE_BOUNDARY_WAIT`]); data from the app
//!    after that point is dropped and counted;
//! 2. frames the client still sends reach the app, until the client's close reply, which
//!    is swallowed; the app then gets a masked close 1001 and the client's TCP side is
//!    closed (the server closes first, RFC 6455 §7.1.1);
//! 3. the app's close reply is awaited; everything is bounded by the close timeout.
//!
//! Closes initiated by the client or the app pass through untouched.

use std::future::poll_fn;
use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

use crate::connections::{Command, ConnHandle};
use crate::frame_tracker::{Event, FrameTracker, StopAt, close_frame, control_payload, ping_frame};
use crate::metrics::{DirectionMetrics, ErrorKind, Metrics};
use crate::{buffer_pool, hint};

/// How long a scheduled close waits for the end of a fragmented message before it goes
/// in between two fragments (which RFC 6455 §5.4 allows for control frames).
pub const MESSAGE_BOUNDARY_WAIT: Duration = Duration::from_millis(200);

/// Close code for "going away" (sent to the app when wsdrain closes a connection).
const GOING_AWAY: u16 = 1001;
/// Close code for a message over `--max-message-size`.
const MESSAGE_TOO_BIG: u16 = 1009;

/// Relay settings, shared by every connection of a proxy.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Close code for scheduled closes and for an app that went away.
    pub close_code: u16,
    /// Bound on every close handshake wsdrain starts or waits for.
    pub close_timeout: Duration,
    /// Largest message relayed; 0 = no limit.
    pub max_message: u64,
    /// Upper bound of the reconnect hint drawn when the app goes away.
    pub reconnect_jitter: Duration,
    /// WebSocket framing (false in `--mode tcp`: plain bytes, closes are FINs).
    pub framed: bool,
    /// Ping the client after this much silence from it; zero = never.
    pub ping_interval: Duration,
    /// Close a client that sends nothing this long after a ping.
    pub ping_timeout: Duration,
}

/// Payload of wsdrain's own pings; pongs carrying it are not forwarded to the app.
const PING_PAYLOAD: &[u8] = b"wsdrain";

/// How a relay ended, for logs and drain accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both sides finished (close handshake or TCP close).
    Finished,
    /// The close timeout ran out while a side was still open.
    TimedOut,
    /// Aborted from outside (drain deadline or forced shutdown).
    Aborted,
}

/// Relays between `client` and `app` until both are done. `client_early` and `app_early`
/// are bytes that arrived with the handshake and go out first.
pub async fn run(
    client: TcpStream,
    client_early: Bytes,
    app: TcpStream,
    app_early: Bytes,
    handle: &ConnHandle,
    settings: &RelaySettings,
    metrics: &Metrics,
) -> Ending {
    let pinging = settings.framed && !settings.ping_interval.is_zero();
    let mut relay = Relay {
        c2a: Pump::new(settings, &client_early, {
            let t = FrameTracker::new(settings.max_message).expecting_mask(true);
            if pinging { t.reporting_pongs() } else { t }
        }),
        a2c: Pump::new(
            settings,
            &app_early,
            FrameTracker::new(settings.max_message).expecting_mask(false),
        ),
        ping_timer: pinging.then(|| Box::pin(tokio::time::sleep(settings.ping_interval))),
        ping_outstanding: false,
        client,
        app,
        handle,
        settings,
        metrics,
        timer: None,
        timer_is_linger: false,
        close_requested: false,
        close_recorded: false,
        client_close_sent: false,
        client_close_recv: false,
        app_close_sent: false,
        app_close_recv: false,
    };
    drop((client_early, app_early));
    poll_fn(|cx| relay.poll(cx)).await
}

struct Relay<'a> {
    client: TcpStream,
    app: TcpStream,
    c2a: Pump,
    a2c: Pump,
    handle: &'a ConnHandle,
    settings: &'a RelaySettings,
    metrics: &'a Metrics,
    timer: Option<Pin<Box<Sleep>>>,
    timer_is_linger: bool,
    /// Liveness: fires after `ping_interval` of client silence, then `ping_timeout`.
    ping_timer: Option<Pin<Box<Sleep>>>,
    ping_outstanding: bool,
    close_requested: bool,
    close_recorded: bool,
    client_close_sent: bool,
    client_close_recv: bool,
    app_close_sent: bool,
    app_close_recv: bool,
}

impl Relay<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        loop {
            let (command, hint_ms) = self.handle.poll_command(cx);
            match command {
                Command::Abort => return Poll::Ready(Ending::Aborted),
                Command::Close if !self.close_requested => {
                    self.close_requested = true;
                    self.scheduled_close(hint_ms);
                }
                _ => {}
            }
            if let Some(timer) = self.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                if self.timer_is_linger {
                    return Poll::Ready(Ending::TimedOut);
                }
                // No message boundary in time: a frame boundary will do.
                self.a2c.stop = StopAt::FrameEnd;
                self.arm_linger();
            }
            if let Some(timer) = self.ping_timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                self.on_ping_timer();
                continue;
            }
            let mut progressed = false;
            let m = self.metrics;
            if let Poll::Ready(ev) =
                self.a2c
                    .poll_pump(cx, &self.app, &self.client, &m.app_to_client)
            {
                progressed = true;
                self.on_app_to_client(ev);
            }
            if let Poll::Ready(ev) =
                self.c2a
                    .poll_pump(cx, &self.client, &self.app, &m.client_to_app)
            {
                progressed = true;
                self.on_client_to_app(ev);
            }
            if self.c2a.finished() && self.a2c.finished() {
                return Poll::Ready(Ending::Finished);
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// The drain scheduler's close: the configured code and the reconnect hint, at the
    /// next message boundary. In TCP mode: a FIN to the client once pending bytes are out.
    fn scheduled_close(&mut self, hint_ms: u32) {
        if self.client_close_sent || self.client_close_recv || self.a2c.write_done {
            return; // a close is already under way
        }
        if !self.settings.framed {
            self.a2c.shutdown_after_flush = true;
            self.client_close_sent = true;
            self.record_close(None, "proxy");
            self.arm_linger();
            return;
        }
        let code = self.settings.close_code;
        let frame = close_frame(code, &hint::reason(hint_ms), None);
        self.a2c.want_inject(frame, code, StopAt::MessageEnd);
        self.timer = Some(Box::pin(tokio::time::sleep(MESSAGE_BOUNDARY_WAIT)));
        self.timer_is_linger = false;
    }

    /// Liveness: a client silent for `ping_interval` gets a ping; one still silent
    /// `ping_timeout` later is taken for dead (paused, or gone without a FIN).
    fn on_ping_timer(&mut self) {
        let closing = self.client_close_sent || self.client_close_recv || self.a2c.write_done;
        if closing {
            self.ping_timer = None;
            return;
        }
        let rearm = |after| Some(Box::pin(tokio::time::sleep(after)));
        if std::mem::take(&mut self.c2a.got_bytes) {
            self.ping_outstanding = false;
            self.ping_timer = rearm(self.settings.ping_interval);
            return;
        }
        if self.ping_outstanding {
            self.metrics.error(ErrorKind::PingTimeout);
            self.ping_timer = None;
            self.record_close(None, "proxy");
            self.a2c.abandon();
            self.c2a.stop_reading();
            self.close_app(GOING_AWAY);
            self.c2a.shutdown_after_flush = true;
            self.arm_linger();
            return;
        }
        if self.a2c.want.is_none() {
            self.a2c.want = Some((ping_frame(PING_PAYLOAD), None));
            self.a2c.stop = StopAt::FrameEnd;
        }
        self.ping_outstanding = true;
        self.ping_timer = rearm(self.settings.ping_timeout);
    }

    /// `--mode tcp`: half-closes are passed on; a broken side ends the other.
    fn on_tcp_event(&mut self, from_app: bool, ev: PumpEvent) {
        let (src, dst) = if from_app {
            (&mut self.a2c, &mut self.c2a)
        } else {
            (&mut self.c2a, &mut self.a2c)
        };
        match ev {
            PumpEvent::Eof | PumpEvent::ReadError => src.shutdown_after_flush = true,
            PumpEvent::WriteError => {
                src.abandon();
                dst.shutdown_after_flush = true;
            }
            _ => {}
        }
        self.arm_linger();
    }

    /// Bounds whatever close is under way by the close timeout.
    fn arm_linger(&mut self) {
        if !self.timer_is_linger {
            self.a2c.stop = StopAt::FrameEnd;
            self.timer = Some(Box::pin(tokio::time::sleep(self.settings.close_timeout)));
            self.timer_is_linger = true;
        }
    }

    fn record_close(&mut self, code: Option<u16>, initiator: &'static str) {
        if !self.close_recorded {
            self.close_recorded = true;
            self.metrics.close(code, initiator);
        }
    }

    /// Asks for a masked close to the app, unless one was sent or the app is gone.
    fn close_app(&mut self, code: u16) {
        if !self.app_close_sent && !self.c2a.write_done && self.c2a.want.is_none() {
            self.c2a.want_inject(
                close_frame(code, "", Some(rand::random())),
                code,
                StopAt::FrameEnd,
            );
        }
    }

    /// Asks for a close to the client, unless one was sent or the client is gone.
    fn close_client(&mut self, code: u16, reason: &str) {
        if !self.client_close_sent && !self.a2c.write_done && self.a2c.want.is_none() {
            self.a2c
                .want_inject(close_frame(code, reason, None), code, StopAt::FrameEnd);
        }
    }

    fn on_app_to_client(&mut self, ev: PumpEvent) {
        if !self.settings.framed {
            return self.on_tcp_event(true, ev);
        }
        match ev {
            PumpEvent::PingSent | PumpEvent::PongSwallowed => {}
            PumpEvent::Close(code) => {
                self.app_close_recv = true;
                if self.a2c.discard {
                    // The app's reply to our close: the app side may end now.
                    self.c2a.shutdown_after_flush = true;
                } else {
                    self.client_close_sent = true;
                    self.record_close(code, "app");
                }
            }
            PumpEvent::Injected(code) => {
                self.client_close_sent = true;
                self.record_close(Some(code), "proxy");
                self.c2a.swallow_close = true;
                self.arm_linger();
                if self.client_close_recv {
                    self.a2c.shutdown_after_flush = true;
                }
            }
            PumpEvent::TooBig => {
                self.metrics.error(ErrorKind::MessageTooBig);
                self.close_client(GOING_AWAY, "");
                self.close_app(MESSAGE_TOO_BIG);
                self.arm_linger();
            }
            PumpEvent::Eof | PumpEvent::ReadError => {
                self.arm_linger();
                if self.app_close_recv || self.app_close_sent || self.client_close_sent {
                    self.a2c.shutdown_after_flush = true;
                    return;
                }
                // The app went away without a close frame: crash, OOM kill, exit.
                self.c2a.abandon();
                if self.a2c.tracker.at_frame_boundary() {
                    self.metrics.error(ErrorKind::AppGone);
                    // Closes one by one with no count known: the low-discrepancy sequence.
                    let hint = hint::next_in_sequence(self.settings.reconnect_jitter);
                    self.close_client(self.settings.close_code, &hint::reason(hint));
                } else {
                    self.metrics.error(ErrorKind::AppGoneMidFrame);
                    self.a2c.shutdown_after_flush = true;
                }
            }
            PumpEvent::WriteError => {
                // The client's socket broke: nothing more can reach it.
                self.metrics.error(ErrorKind::ClientReset);
                self.a2c.abandon();
                self.close_app(GOING_AWAY);
                self.c2a.shutdown_after_flush = true;
                self.arm_linger();
            }
        }
    }

    fn on_client_to_app(&mut self, ev: PumpEvent) {
        if !self.settings.framed {
            return self.on_tcp_event(false, ev);
        }
        match ev {
            PumpEvent::PingSent | PumpEvent::PongSwallowed => {}
            PumpEvent::Close(code) => {
                self.client_close_recv = true;
                if self.c2a.discard {
                    // The client's reply to our close, withheld from the app.
                    self.close_app(GOING_AWAY);
                    if self.client_close_sent {
                        self.a2c.shutdown_after_flush = true;
                    }
                } else {
                    self.app_close_sent = true;
                    self.record_close(code, "client");
                }
            }
            PumpEvent::Injected(code) => {
                self.app_close_sent = true;
                self.record_close(Some(code), "proxy");
                self.arm_linger();
            }
            PumpEvent::TooBig => {
                self.metrics.error(ErrorKind::MessageTooBig);
                self.close_client(MESSAGE_TOO_BIG, "");
                self.close_app(GOING_AWAY);
                self.arm_linger();
            }
            PumpEvent::Eof | PumpEvent::ReadError => {
                self.arm_linger();
                if self.client_close_recv || self.client_close_sent {
                    if !self.app_close_sent || self.app_close_recv {
                        self.c2a.shutdown_after_flush = true;
                    }
                    return;
                }
                // The client vanished without a close frame: tell the app properly.
                self.metrics.error(ErrorKind::ClientGone);
                self.a2c.abandon();
                if self.c2a.tracker.at_frame_boundary() {
                    self.close_app(GOING_AWAY);
                }
                self.c2a.shutdown_after_flush = true;
            }
            PumpEvent::WriteError => {
                // The app's socket broke; the app-to-client side will see it too.
                self.c2a.abandon();
                self.arm_linger();
            }
        }
    }
}

/// Something a pump needs the connection to decide on.
#[derive(Debug)]
enum PumpEvent {
    /// A close frame from the source (forwarded, or withheld when swallowing).
    Close(Option<u16>),
    /// wsdrain's own close frame (with this code) is queued to the destination.
    Injected(u16),
    /// wsdrain's own ping is queued to the destination.
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

/// One direction of a relay.
///
/// Buffer layout while a buffer is borrowed: `[pos..fwd)` is cleared for writing,
/// `[fwd..scanned)` was accounted for and is dropped, `[scanned..filled)` waits for
/// more bytes (an incomplete header or control frame).
struct Pump {
    tracker: FrameTracker,
    buf: Option<Box<[u8]>>,
    pos: usize,
    fwd: usize,
    scanned: usize,
    filled: usize,
    /// A frame of wsdrain's own being written.
    inject: Vec<u8>,
    inject_pos: usize,
    /// A control frame of wsdrain's own to write at the next boundary of kind `stop`:
    /// a close (with its code; the stream ends there) or a ping (no code).
    want: Option<(Vec<u8>, Option<u16>)>,
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

impl Pump {
    fn new(settings: &RelaySettings, early: &[u8], tracker: FrameTracker) -> Self {
        let mut pump = Pump {
            tracker,
            buf: None,
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
            let mut buf = if early.len() <= buffer_pool::BUF_SIZE / 2 {
                buffer_pool::take()
            } else {
                vec![0u8; early.len() + buffer_pool::BUF_SIZE].into_boxed_slice()
            };
            buf[..early.len()].copy_from_slice(early);
            pump.filled = early.len();
            pump.buf = Some(buf);
        }
        pump
    }

    fn want_inject(&mut self, frame: Vec<u8>, code: u16, stop: StopAt) {
        self.want = Some((frame, Some(code)));
        self.stop = stop;
    }

    /// The destination is gone: stop writing, keep reading to see the source's end.
    fn abandon(&mut self) {
        self.write_done = true;
        self.discard = true;
        self.want = None;
    }

    /// The source is taken for dead: stop waiting for its bytes.
    fn stop_reading(&mut self) {
        self.read_done = true;
        self.eof_reported = true;
    }

    fn finished(&self) -> bool {
        self.read_done && self.write_done && self.event.is_none()
    }

    /// Writes what is queued. Ready(Ok) when nothing is left to write.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        dst: &TcpStream,
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
            ready!(dst.poll_write_ready(cx))?;
            match dst.try_write(&buf[self.pos..self.fwd]) {
                Ok(n) => {
                    self.pos += n;
                    m.bytes.inc_by(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        while self.inject_pos < self.inject.len() {
            ready!(dst.poll_write_ready(cx))?;
            match dst.try_write(&self.inject[self.inject_pos..]) {
                Ok(n) => self.inject_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// After a flush: skips dropped bytes, moves a waiting tail to the front, and gives
    /// the buffer back when it holds nothing.
    fn compact(&mut self) {
        let Some(buf) = self.buf.as_mut() else { return };
        self.pos = self.scanned;
        self.fwd = self.scanned;
        if self.scanned == self.filled {
            if let Some(b) = self.buf.take() {
                buffer_pool::give(b);
            }
            self.pos = 0;
            self.fwd = 0;
            self.scanned = 0;
            self.filled = 0;
        } else if self.scanned > 0 {
            buf.copy_within(self.scanned..self.filled, 0);
            self.filled -= self.scanned;
            self.pos = 0;
            self.fwd = 0;
            self.scanned = 0;
        }
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

    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
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
            if let Some((frame, code)) = self.want.take_if(|_| {
                !self.write_done
                    && match self.stop {
                        StopAt::MessageEnd => self.tracker.at_message_boundary(),
                        _ => self.tracker.at_frame_boundary(),
                    }
            }) {
                self.inject = frame;
                self.inject_pos = 0;
                self.stop = StopAt::Never;
                self.event = Some(match code {
                    Some(code) => {
                        // After our close, nothing more may reach this destination.
                        self.discard = true;
                        PumpEvent::Injected(code)
                    }
                    None => PumpEvent::PingSent,
                });
                continue;
            }
            if self.shutdown_after_flush && !self.write_done && self.want.is_none() {
                let _ = SockRef::from(dst).shutdown(Shutdown::Write);
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
                return Poll::Pending;
            }
            if let Err(_e) = ready!(src.poll_read_ready(cx)) {
                self.read_done = true;
                self.eof_reported = true;
                return Poll::Ready(PumpEvent::ReadError);
            }
            let buf = self.buf.get_or_insert_with(buffer_pool::take);
            if self.filled == buf.len() {
                // Cannot happen (a waiting tail is at most 139 bytes), but a full buffer
                // must never turn into a zero-length read that looks like EOF.
                let mut bigger = vec![0u8; buf.len() * 2].into_boxed_slice();
                bigger[..buf.len()].copy_from_slice(buf);
                *buf = bigger;
            }
            match read_once(src, &mut buf[self.filled..]) {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    self.filled += n;
                    self.got_bytes = true;
                    self.scan(m);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.filled == 0
                        && let Some(b) = self.buf.take()
                    {
                        buffer_pool::give(b);
                    }
                }
                Err(_) => {
                    self.read_done = true;
                    self.eof_reported = true;
                    return Poll::Ready(PumpEvent::ReadError);
                }
            }
        }
    }
}

/// Reads what the socket holds, like `try_read`, except that a short read also clears
/// tokio's readiness, as `AsyncRead::poll_read` does: the socket is drained, so the next
/// read waits for epoll instead of costing a `recvfrom` that fails with EAGAIN (a third
/// of the relay's syscalls on small messages before this).
fn read_once(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let mut got = 0;
    let result = src.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(src)).read(buf)?;
        got = n;
        if n > 0 && n < len {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}
