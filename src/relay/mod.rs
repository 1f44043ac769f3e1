//! The relay: moves frames between a client and the app after the 101, and closes
//! connections gracefully when asked to.
//!
//! This module is the choreography: it decides *when* each side gets a close, a ping or
//! a FIN, and when a connection is over. The data itself never passes through here.
//! One task per connection drives two `Pump`s (see `pump`), one per direction, over
//! the same pair of sockets: client → app and app → client. Commands come in from the
//! drain scheduler through the [`ConnHandle`]; `PumpEvent`s come up from the pumps
//! (a close frame seen, our frame written, an EOF, a broken socket); decisions go back
//! down as the pumps' intents, among them frames of wsdrain's own that a pump
//! puts on the wire at a frame boundary, the close frame with the reconnect hint among
//! them, without ever cutting a frame in half. What comes out is an [`Ending`].
//! Both sockets are a [`Transport`] (the client's plaintext TCP or TLS, the app's
//! plaintext); nothing here depends on which.
//!
//! The close choreography, when wsdrain initiates it (drain, message too big, app gone):
//! 1. the client gets a close frame at the next message boundary (or frame boundary if
//!    no message boundary comes within [`MESSAGE_BOUNDARY_WAIT`]); data from the app
//!    after that point is dropped and counted;
//! 2. frames the client still sends reach the app, until the client's close reply, which
//!    is swallowed; the app then gets a masked close 1001 and the client's TCP side is
//!    closed (the server closes first, RFC 6455 §7.1.1);
//! 3. the app's close reply is awaited; everything is bounded by the close timeout,
//!    and once the handshake is over the client's FIN only by [`FIN_WAIT`].
//!
//! Which close is outstanding is tracked per direction, so every close frame is answered
//! exactly once: a client that answers with a bare FIN still leaves the app a close
//! 1001 before its EOF, and an app that starts its own close while the client has ours
//! is answered by wsdrain (1001), not taken for the reply to a close it never got.
//!
//! Closes initiated by the client or the app pass through untouched, and the first
//! close wins: one close frame per direction (RFC 6455 §5.5.1), so a close of ours still
//! waiting for a boundary is dropped when a peer's close passes first.

mod pump;
mod transport;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Sleep;

use crate::drain::DrainSettings;
use crate::frame_tracker::{FrameTracker, StopAt, close_frame, ping_frame};
use crate::hint;
use crate::metrics::{ErrorKind, Initiator, Metrics};
use crate::registry::{Command, ConnHandle};
use pump::{Pump, PumpEvent};
pub use transport::Transport;

/// How long a scheduled close waits for the end of a fragmented message before it goes
/// in between two fragments (which RFC 6455 §5.4 allows for control frames).
pub const MESSAGE_BOUNDARY_WAIT: Duration = Duration::from_millis(200);

/// How long a client may keep its TCP connection open once the close handshake is over
/// (both close frames exchanged, the app side done, our FIN sent): RFC 6455 §7.1.1 has
/// the client close TCP next, and one that does not is let go after this (at most the
/// close timeout), counted as `fin_timeout` rather than as a close timeout.
pub const FIN_WAIT: Duration = Duration::from_secs(2);

/// Close code for "going away" (sent to the app when wsdrain closes a connection).
const GOING_AWAY: u16 = 1001;
/// Close code for a message over `--max-message-size`.
const MESSAGE_TOO_BIG: u16 = 1009;

/// Relay settings, shared by every connection of a proxy.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The drain plan: its close code (scheduled closes, an app that went away), its
    /// close timeout (every close handshake wsdrain starts or waits for) and its reconnect
    /// jitter (the hint drawn when the app goes away).
    pub drain: DrainSettings,
    /// Largest message relayed; 0 = no limit.
    pub max_message: u64,
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
    /// The close handshake was over but the client did not close TCP within
    /// [`FIN_WAIT`]; let go.
    FinTimedOut,
}

/// Relays between `client` and `app` until both are done. `client_early` and `app_early`
/// are bytes that arrived with the handshake and go out first.
pub async fn run<T: Transport>(
    client: T,
    client_early: Bytes,
    app: T,
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
        timer: CloseTimer::None,
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

/// The timer bounding a close that wsdrain waits for. One timer at a time: the wait for
/// a message boundary is replaced by the linger once the close is under way.
enum CloseTimer {
    /// No close under way (or only ones the peers run by themselves).
    None,
    /// A scheduled close waits at most this long for the end of a fragmented message.
    BoundaryWait(Pin<Box<Sleep>>),
    /// The close timeout: when it fires the connection is given up.
    Linger(Pin<Box<Sleep>>),
    /// The handshake is over and only the client's FIN is awaited ([`FIN_WAIT`]).
    FinWait(Pin<Box<Sleep>>),
}

struct Relay<'a, T> {
    client: T,
    app: T,
    c2a: Pump,
    a2c: Pump,
    handle: &'a ConnHandle,
    settings: &'a RelaySettings,
    metrics: &'a Metrics,
    timer: CloseTimer,
    /// Liveness: fires after `ping_interval` of client silence, then `ping_timeout` after
    /// the ping was written (none while the ping waits for a frame boundary).
    ping_timer: Option<Pin<Box<Sleep>>>,
    ping_outstanding: bool,
    close_requested: bool,
    close_recorded: bool,
    client_close_sent: bool,
    client_close_recv: bool,
    app_close_sent: bool,
    app_close_recv: bool,
}

impl<T: Transport> Relay<'_, T> {
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
            // Some(true): the linger ran out; Some(false): the boundary wait did.
            let fired = match &mut self.timer {
                CloseTimer::None => None,
                CloseTimer::BoundaryWait(t) => t.as_mut().poll(cx).is_ready().then_some(false),
                CloseTimer::Linger(t) => t.as_mut().poll(cx).is_ready().then_some(true),
                CloseTimer::FinWait(t) => {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ending::FinTimedOut);
                    }
                    None
                }
            };
            match fired {
                Some(true) => return Poll::Ready(Ending::TimedOut),
                Some(false) => {
                    // No message boundary in time: a frame boundary will do.
                    self.a2c.settle_for_frame_end();
                    self.arm_linger();
                    // The linger's Sleep is new: only a poll registers its wake-up.
                    continue;
                }
                None => {}
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
                    .poll_pump(cx, &mut self.app, &mut self.client, &m.app_to_client)
            {
                progressed = true;
                self.on_app_to_client(ev);
            }
            if let Poll::Ready(ev) =
                self.c2a
                    .poll_pump(cx, &mut self.client, &mut self.app, &m.client_to_app)
            {
                progressed = true;
                self.on_client_to_app(ev);
            }
            if self.c2a.finished() && self.a2c.finished() {
                return Poll::Ready(Ending::Finished);
            }
            if self.only_the_clients_fin_is_left() {
                let wait = FIN_WAIT.min(self.settings.drain.close_timeout);
                self.timer = CloseTimer::FinWait(Box::pin(tokio::time::sleep(wait)));
                // The new Sleep registers its wake-up only when polled.
                continue;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// The drain scheduler's close: the configured code and the reconnect hint, at the
    /// next message boundary. In TCP mode: a FIN to the client once pending bytes are out.
    fn scheduled_close(&mut self, hint_ms: u32) {
        if self.client_close_sent || self.client_close_recv || self.a2c.write_closed() {
            return; // a close is already under way
        }
        if !self.settings.framed {
            self.a2c.shutdown_after_flush();
            self.client_close_sent = true;
            self.record_close(None, Initiator::Proxy);
            self.arm_linger();
            return;
        }
        let code = self.settings.drain.close_code;
        let frame = close_frame(code, &hint::reason(hint_ms), None);
        self.a2c.want_inject(frame, code, StopAt::MessageEnd);
        self.timer = CloseTimer::BoundaryWait(Box::pin(tokio::time::sleep(MESSAGE_BOUNDARY_WAIT)));
    }

    /// Liveness: a client silent for `ping_interval` gets a ping; one still silent
    /// `ping_timeout` after that ping was written is taken for dead (paused, or gone
    /// without a FIN).
    fn on_ping_timer(&mut self) {
        let closing = self.client_close_sent || self.client_close_recv || self.a2c.write_closed();
        if closing {
            self.ping_timer = None;
            return;
        }
        let rearm = |after| Some(Box::pin(tokio::time::sleep(after)));
        if self.c2a.take_got_bytes() {
            self.ping_outstanding = false;
            self.ping_timer = rearm(self.settings.ping_interval);
            return;
        }
        if self.ping_outstanding {
            self.metrics.error(ErrorKind::PingTimeout);
            self.ping_timer = None;
            self.record_close(None, Initiator::Proxy);
            self.a2c.abandon();
            self.c2a.stop_reading();
            self.close_app(GOING_AWAY);
            self.c2a.shutdown_after_flush();
            self.arm_linger();
            return;
        }
        if self.a2c.injection_waiting() {
            // A close of ours waits for a boundary: it ends the connection, under its
            // own timers. No ping, so no ping timeout.
            self.ping_timer = rearm(self.settings.ping_interval);
            return;
        }
        // The ping may wait behind a large frame the client is still reading: the
        // timeout starts once it is written (PumpEvent::PingSent), not now.
        self.a2c.want_ping(ping_frame(PING_PAYLOAD));
        self.ping_outstanding = true;
        self.ping_timer = None;
    }

    /// `--mode tcp`: a half-close is passed on and the other direction keeps flowing
    /// until its own FIN: a client that sends its request and half-closes still reads
    /// the whole answer, however long it takes (dead peers are found by keepalive and
    /// `TCP_USER_TIMEOUT`, see `sockets`). `--close-timeout` bounds only what wsdrain
    /// starts (a scheduled close) and a broken socket, whose other side is then ended.
    fn on_tcp_event(&mut self, from_app: bool, ev: PumpEvent) {
        let (src, dst) = if from_app {
            (&mut self.a2c, &mut self.c2a)
        } else {
            (&mut self.c2a, &mut self.a2c)
        };
        match ev {
            PumpEvent::Eof => src.shutdown_after_flush(),
            PumpEvent::ReadError => {
                // A reset: nothing can be written back to that socket either.
                src.shutdown_after_flush();
                dst.abandon();
                self.arm_linger();
            }
            PumpEvent::WriteError => {
                src.abandon();
                dst.shutdown_after_flush();
                self.arm_linger();
            }
            _ => {}
        }
    }

    /// True once the close handshake with the client is over, the app side is done and
    /// our FIN is sent, so that only the client's FIN is awaited (and no [`FIN_WAIT`]
    /// runs yet).
    fn only_the_clients_fin_is_left(&self) -> bool {
        self.settings.framed
            && self.client_close_sent
            && self.client_close_recv
            && self.a2c.finished()
            && self.c2a.write_closed()
            && !matches!(self.timer, CloseTimer::FinWait(_))
    }

    /// Bounds whatever close is under way by the close timeout.
    fn arm_linger(&mut self) {
        if !matches!(self.timer, CloseTimer::Linger(_)) {
            self.a2c.settle_for_frame_end();
            self.timer = CloseTimer::Linger(Box::pin(tokio::time::sleep(
                self.settings.drain.close_timeout,
            )));
        }
    }

    fn record_close(&mut self, code: Option<u16>, initiator: Initiator) {
        if !self.close_recorded {
            self.close_recorded = true;
            self.metrics.close(code, initiator);
        }
    }

    /// Asks for a masked close to the app, unless one was sent or the app is gone.
    fn close_app(&mut self, code: u16) {
        if !self.app_close_sent && !self.c2a.write_closed() && !self.c2a.injection_waiting() {
            self.c2a.want_inject(
                close_frame(code, "", Some(rand::random())),
                code,
                StopAt::FrameEnd,
            );
        }
    }

    /// Asks for a close to the client, unless one was sent or the client is gone.
    fn close_client(&mut self, code: u16, reason: &str) {
        if !self.client_close_sent && !self.a2c.write_closed() && !self.a2c.injection_waiting() {
            self.a2c
                .want_inject(close_frame(code, reason, None), code, StopAt::FrameEnd);
        }
    }

    fn on_app_to_client(&mut self, ev: PumpEvent) {
        if !self.settings.framed {
            return self.on_tcp_event(true, ev);
        }
        match ev {
            PumpEvent::PingSent => {
                if self.ping_outstanding {
                    self.ping_timer =
                        Some(Box::pin(tokio::time::sleep(self.settings.ping_timeout)));
                }
            }
            PumpEvent::PongSwallowed => {}
            PumpEvent::Close(code) => {
                self.app_close_recv = true;
                if self.a2c.discarding() {
                    if !self.app_close_sent {
                        // Not a reply: the app starts its own close while the client has
                        // ours. The client cannot get a second close, so wsdrain answers
                        // the app itself; the client's reply still answers ours.
                        self.close_app(GOING_AWAY);
                    }
                    // The app side may end once its answer (if any) is out.
                    self.c2a.shutdown_after_flush();
                } else {
                    // The app's close is the one close the client gets (RFC 6455 §5.5.1):
                    // a close or ping of ours still waiting for a boundary is dropped.
                    self.a2c.cancel_injection();
                    self.client_close_sent = true;
                    self.record_close(code, Initiator::App);
                }
            }
            PumpEvent::Injected(code) => {
                self.client_close_sent = true;
                self.record_close(Some(code), Initiator::Proxy);
                self.c2a.swallow_next_close();
                self.arm_linger();
                if self.client_close_recv {
                    self.a2c.shutdown_after_flush();
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
                    self.a2c.shutdown_after_flush();
                    return;
                }
                // The app went away without a close frame: crash, OOM kill, exit.
                self.c2a.abandon();
                if self.a2c.at_frame_boundary() {
                    self.metrics.error(ErrorKind::AppGone);
                    // Closes one by one with no count known: the low-discrepancy sequence.
                    let hint = hint::next_in_sequence(self.settings.drain.reconnect_jitter);
                    self.close_client(self.settings.drain.close_code, &hint::reason(hint));
                } else {
                    self.metrics.error(ErrorKind::AppGoneMidFrame);
                    self.a2c.shutdown_after_flush();
                }
            }
            PumpEvent::WriteError => {
                // The client's socket broke: nothing more can reach it.
                self.metrics.error(ErrorKind::ClientReset);
                self.a2c.abandon();
                self.close_app(GOING_AWAY);
                self.c2a.shutdown_after_flush();
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
                if self.c2a.discarding() {
                    // The client's reply to our close, withheld from the app.
                    self.close_app(GOING_AWAY);
                    if self.client_close_sent {
                        self.a2c.shutdown_after_flush();
                    }
                } else {
                    // The client's close is the one close the app gets, and the app's
                    // reply is the one the client gets: nothing of ours is still due.
                    self.c2a.cancel_injection();
                    self.a2c.cancel_injection();
                    self.app_close_sent = true;
                    self.record_close(code, Initiator::Client);
                }
            }
            PumpEvent::Injected(code) => {
                self.app_close_sent = true;
                self.record_close(Some(code), Initiator::Proxy);
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
                    if !self.app_close_sent && self.c2a.at_frame_boundary() {
                        // A bare FIN in answer to our close: the app still gets its
                        // close frame before the FIN (a no-op if one is already due).
                        self.close_app(GOING_AWAY);
                    }
                    if !self.app_close_sent || self.app_close_recv {
                        self.c2a.shutdown_after_flush();
                    }
                    return;
                }
                // The client vanished without a close frame: tell the app properly.
                self.metrics.error(ErrorKind::ClientGone);
                self.a2c.abandon();
                if self.c2a.at_frame_boundary() {
                    self.close_app(GOING_AWAY);
                }
                self.c2a.shutdown_after_flush();
            }
            PumpEvent::WriteError => {
                // The app's socket broke; the app-to-client side will see it too.
                self.c2a.abandon();
                self.arm_linger();
            }
        }
    }
}
