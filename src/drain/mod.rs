//! The drain controller: the phases a pod goes through when it is going away.
//!
//! Announce (`--drain-delay`): `/readyz` turns 503 at once so the endpoint is removed,
//! while traffic still arriving is served. Stagger (`--drain-window`): new upgrades are
//! refused and every open connection is closed at its own instant, chosen by the
//! [`scheduler`]. Deadline (`--close-timeout` after the stagger): whatever is still open
//! is cut. Triggering again is harmless; an immediate trigger (second SIGTERM, SIGQUIT)
//! skips the waiting and closes everything at once.

pub mod scheduler;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::info;

use crate::connections::{Command, Connections};
use crate::metrics::Metrics;
use crate::relay::draw_hint;

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No drain: serving normally.
    Serving = 0,
    /// Readiness is off; traffic is still served.
    Announcing = 1,
    /// Connections are being closed on schedule; new upgrades are refused.
    Staggering = 2,
    /// Schedule done; waiting for the last close handshakes until the deadline.
    Closing = 3,
    /// No connection is left.
    Done = 4,
}

/// How a drain was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// Not asked.
    None,
    /// The staggered drain.
    Graceful,
    /// Close everything now (second SIGTERM, SIGQUIT).
    Immediate,
}

/// Drain timing, from the proxy flags.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// Announce phase length.
    pub delay: Duration,
    /// Stagger window.
    pub window: Duration,
    /// Closes per second at most (0 = no limit).
    pub max_rate: f64,
    /// Time for close handshakes after the stagger.
    pub close_timeout: Duration,
    /// Upper bound of the reconnect hint.
    pub reconnect_jitter: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct Times {
    started: Option<SystemTime>,
    deadline: Option<SystemTime>,
}

/// Shared drain state: read by the proxy (refuse upgrades?), the admin port (status,
/// readiness) and the relays' owners (accounting), written by the controller.
#[derive(Debug)]
pub struct Drain {
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    trigger_tx: watch::Sender<Trigger>,
    times: Mutex<Times>,
    open_at_stagger: AtomicU64,
    closed_by_schedule: AtomicU64,
    closed_by_deadline: AtomicU64,
    prestop_waiting: AtomicU64,
}

/// Counts a `/prestop` caller until its answer is on its way.
#[derive(Debug)]
pub struct PrestopWaiter<'a>(&'a Drain);

impl Drop for PrestopWaiter<'_> {
    fn drop(&mut self) {
        self.0.prestop_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The JSON answer of `GET /drain`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Current phase.
    pub phase: Phase,
    /// True from the trigger on.
    pub draining: bool,
    /// WebSocket connections open now.
    pub open: usize,
    /// Connections closed by this drain so far.
    pub closed: u64,
    /// ... of which at their scheduled time.
    pub closed_by_schedule: u64,
    /// ... of which cut at the deadline.
    pub closed_by_deadline: u64,
    /// Connections open when the stagger started.
    pub open_at_stagger: u64,
    /// When the drain was triggered (RFC 3339).
    pub started: Option<String>,
    /// When whatever is left will be cut (RFC 3339).
    pub deadline: Option<String>,
    /// Milliseconds until the deadline.
    pub deadline_in_ms: Option<u64>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            phase: AtomicU8::new(Phase::Serving as u8),
            phase_tx: watch::channel(Phase::Serving).0,
            trigger_tx: watch::channel(Trigger::None).0,
            times: Mutex::new(Times::default()),
            open_at_stagger: AtomicU64::new(0),
            closed_by_schedule: AtomicU64::new(0),
            closed_by_deadline: AtomicU64::new(0),
            prestop_waiting: AtomicU64::new(0),
        }
    }
}

impl Drain {
    /// Asks for a drain. Returns true when this call started or escalated it.
    pub fn trigger(&self, how: Trigger, source: &str) -> bool {
        self.trigger_tx.send_if_modified(|t| {
            if how > *t {
                // Logged before the controller wakes, so the log reads in order.
                info!(source, trigger = ?how, "drain requested");
                *t = how;
                true
            } else {
                false
            }
        })
    }

    /// The current phase (one atomic load: used on the hot path).
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Serving,
            1 => Phase::Announcing,
            2 => Phase::Staggering,
            3 => Phase::Closing,
            _ => Phase::Done,
        }
    }

    /// True from the trigger on: readiness is off.
    pub fn is_draining(&self) -> bool {
        *self.trigger_tx.borrow() != Trigger::None
    }

    /// True once new upgrades must be refused.
    pub fn rejects_upgrades(&self) -> bool {
        self.phase() >= Phase::Staggering
    }

    /// Resolves when the drain is over (no connection left).
    pub async fn wait_done(&self) {
        let mut rx = self.phase_tx.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Done).await;
    }

    /// Registers a `/prestop` caller; the process does not exit while one is counted,
    /// so a kubelet hook never sees its connection cut (bounded by the exit deadline).
    pub fn prestop_waiter(&self) -> PrestopWaiter<'_> {
        self.prestop_waiting.fetch_add(1, Ordering::AcqRel);
        PrestopWaiter(self)
    }

    /// True while a `/prestop` answer is still being produced.
    pub fn prestop_pending(&self) -> bool {
        self.prestop_waiting.load(Ordering::Acquire) > 0
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.phase_tx.send_replace(phase);
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accounts for a relay that ended after `command` was given to it.
    /// Closes asked for outside a drain (max age, shedding) are not the drain's.
    pub fn connection_ended(&self, command: Command, remaining: usize, metrics: &Metrics) {
        if self.phase() < Phase::Staggering {
            return;
        }
        let counter = match command {
            Command::None => return,
            Command::Close => &self.closed_by_schedule,
            Command::Abort => &self.closed_by_deadline,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics.drain_closed.inc();
        metrics.drain_remaining.set(remaining as i64);
        let at_start = self.open_at_stagger.load(Ordering::Relaxed);
        if at_start > 0 {
            metrics
                .drain_progress
                .set(1.0 - (remaining as f64 / at_start as f64).min(1.0));
        }
    }

    /// The status document of `GET /drain`.
    pub fn status(&self, open: usize) -> Status {
        let times = *self.times();
        let schedule = self.closed_by_schedule.load(Ordering::Relaxed);
        let deadline = self.closed_by_deadline.load(Ordering::Relaxed);
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        Status {
            phase: self.phase(),
            draining: self.is_draining(),
            open,
            closed: schedule + deadline,
            closed_by_schedule: schedule,
            closed_by_deadline: deadline,
            open_at_stagger: self.open_at_stagger.load(Ordering::Relaxed),
            started: times.started.map(rfc3339),
            deadline: times.deadline.map(rfc3339),
            deadline_in_ms: times.deadline.map(|d| {
                d.duration_since(SystemTime::now())
                    .map(|left| left.as_millis() as u64)
                    .unwrap_or(0)
            }),
        }
    }

    fn set_deadline(&self, at: Instant) {
        let from_now = at.saturating_duration_since(Instant::now());
        self.times().deadline = Some(SystemTime::now() + from_now);
    }
}

/// Runs the drain when triggered: announce, stagger, deadline. Returns when done.
pub async fn run(
    drain: Arc<Drain>,
    conns: Arc<Connections>,
    settings: DrainSettings,
    metrics: Metrics,
) {
    let mut trigger = drain.trigger_tx.subscribe();
    if trigger.wait_for(|t| *t != Trigger::None).await.is_err() {
        return;
    }
    let started = Instant::now();
    drain.times().started = Some(SystemTime::now());
    metrics.draining.set(1);
    let immediate = |rx: &watch::Receiver<Trigger>| *rx.borrow() == Trigger::Immediate;

    // Announce.
    drain.set_phase(Phase::Announcing);
    let open = conns.len();
    drain.set_deadline(
        started
            + settings.delay
            + scheduler::stagger_length(open, settings.window, settings.max_rate)
            + settings.close_timeout,
    );
    info!(delay = ?settings.delay, open, "drain: announce (readiness off)");
    if !immediate(&trigger) {
        let _ = timeout(
            settings.delay,
            trigger.wait_for(|t| *t == Trigger::Immediate),
        )
        .await;
    }

    // Stagger.
    let mut handles = conns.snapshot();
    handles.shuffle(&mut rand::rng());
    let n = handles.len();
    let now_immediate = immediate(&trigger);
    let (window, close_timeout) = if now_immediate {
        (
            Duration::ZERO,
            settings.close_timeout.min(Duration::from_secs(1)),
        )
    } else {
        (settings.window, settings.close_timeout)
    };
    let stagger_start = Instant::now();
    let mut deadline =
        stagger_start + scheduler::stagger_length(n, window, settings.max_rate) + close_timeout;
    drain.set_deadline(deadline);
    drain.open_at_stagger.store(n as u64, Ordering::Relaxed);
    metrics.drain_remaining.set(n as i64);
    drain.set_phase(Phase::Staggering);
    info!(connections = n, window = ?window, "drain: stagger (closing connections on schedule)");
    let plan = scheduler::plan(n, window, settings.max_rate);
    let mut pacer = scheduler::Pacer::new(
        n,
        scheduler::stagger_length(n, window, settings.max_rate),
        stagger_start,
    );
    let mut rest = handles.iter();
    for (handle, offset) in rest.by_ref().zip(plan) {
        if !immediate(&trigger) {
            let planned = stagger_start + offset;
            tokio::select! {
                _ = sleep_until(planned) => {}
                _ = trigger.wait_for(|t| *t == Trigger::Immediate) => {}
            }
            if let Some(at) = pacer.as_mut().map(|p| p.next(Instant::now())) {
                tokio::select! {
                    _ = sleep_until(at) => {}
                    _ = trigger.wait_for(|t| *t == Trigger::Immediate) => {}
                }
            }
        }
        if immediate(&trigger) {
            handle.close(draw_hint(settings.reconnect_jitter));
            break;
        }
        handle.close(draw_hint(settings.reconnect_jitter));
    }
    if immediate(&trigger) {
        for handle in rest {
            handle.close(draw_hint(settings.reconnect_jitter));
        }
        if !now_immediate {
            deadline = deadline.min(Instant::now() + close_timeout.min(Duration::from_secs(1)));
            drain.set_deadline(deadline);
        }
    }
    drop(handles);
    // Closes caught up after a stall may end past the window: each still gets its time.
    if !immediate(&trigger) {
        let late = Instant::now() + close_timeout;
        if late > deadline {
            deadline = late;
            drain.set_deadline(deadline);
        }
    }

    // Deadline.
    drain.set_phase(Phase::Closing);
    info!(
        open = conns.len(),
        "drain: schedule done, waiting for close handshakes"
    );
    loop {
        tokio::select! {
            _ = conns.wait_empty() => break,
            _ = sleep_until(deadline) => break,
            _ = trigger.wait_for(|t| *t == Trigger::Immediate), if !immediate(&trigger) => {
                deadline = deadline.min(Instant::now() + Duration::from_secs(1));
                drain.set_deadline(deadline);
            }
        }
    }
    let left = conns.snapshot();
    if !left.is_empty() {
        info!(
            connections = left.len(),
            "drain: deadline reached, closing the rest"
        );
        for handle in &left {
            handle.abort();
        }
        drop(left);
        let _ = timeout(Duration::from_millis(500), conns.wait_empty()).await;
    }
    metrics.drain_remaining.set(conns.len() as i64);
    drain.set_phase(Phase::Done);
    let status = drain.status(conns.len());
    let dropped =
        metrics.client_to_app.dropped_frames.get() + metrics.app_to_client.dropped_frames.get();
    info!(
        closed_by_schedule = status.closed_by_schedule,
        closed_by_deadline = status.closed_by_deadline,
        dropped_frames = dropped,
        took = ?started.elapsed(),
        "drain: done"
    );
}
