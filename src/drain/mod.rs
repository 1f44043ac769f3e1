//! The drain: the phases a pod goes through when it is going away, and the state the
//! rest of the sidecar reads while it happens.
//!
//! Announce (`--drain-delay`): `/readyz` turns 503 at once so the endpoint is removed,
//! while traffic still arriving is served. Stagger (`--drain-window`): the registry is
//! sealed (new upgrades are refused) and every open connection is closed at its own
//! instant, chosen by the [`scheduler`]. Deadline (`--close-timeout` after the stagger):
//! whatever is still open is cut. Triggering again is harmless; an immediate trigger
//! (second SIGTERM, SIGQUIT) skips the waiting and closes everything at once; a drain
//! that no signal and no kubelet started can be cancelled (`DELETE /drain`).
//!
//! Flow: triggers come in from the signal thread and the admin port ([`Drain::trigger`],
//! [`Drain::cancel`]); the [`controller`] task runs the phases and sends close commands
//! through the connection handles; relays report their end through
//! [`Drain::connection_ended`]; the admin port and the exit logic read [`Drain::status`]
//! and [`Drain::deadline`] — one deadline, the one the process honours.

pub mod controller;
pub mod plan;
pub mod scheduler;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::metrics::Metrics;
use crate::registry::{CloseReason, Command, ConnHandle, Connections, Registration};
pub use controller::run;
pub use plan::DrainSettings;

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

/// Who asked for a drain: decides whether it may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// SIGTERM, SIGINT or SIGQUIT: the pod is going away.
    Signal,
    /// `GET /prestop`: the kubelet is terminating the pod.
    Prestop,
    /// `POST /drain` or `wsdrain drain`: an operator, who may change their mind.
    Operator,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Signal => "signal",
            Source::Prestop => "GET /prestop",
            Source::Operator => "POST /drain",
        }
    }
}

/// Why `DELETE /drain` did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefused {
    /// Nothing to cancel.
    #[error("no drain is under way")]
    NotDraining,
    /// A signal or the kubelet started it: the pod is going away regardless.
    #[error("this drain was started by {0}; the pod is going away and it cannot be cancelled")]
    PodTerminating(&'static str),
}

#[derive(Debug, Default, Clone, Copy)]
struct Times {
    started: Option<SystemTime>,
    source: Option<Source>,
}

/// Shared drain state: read by the upgrade path (through the sealed registry), the
/// admin port (status, readiness) and the exit logic; written by the controller and the
/// triggers.
#[derive(Debug)]
pub struct Drain {
    settings: DrainSettings,
    connections: Arc<Connections>,
    metrics: Metrics,
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    trigger_tx: watch::Sender<Trigger>,
    /// Bumped by each accepted cancel; the controller abandons the drain it runs.
    cancel_tx: watch::Sender<u64>,
    /// Held by a cancel and by each step of the controller, so no step of a cancelled
    /// drain lands after the cancel has reset the state.
    gate: Mutex<()>,
    deadline_tx: watch::Sender<Option<Instant>>,
    times: Mutex<Times>,
    open_at_stagger: AtomicU64,
    closed_by_schedule: AtomicU64,
    closed_by_deadline: AtomicU64,
    prestop_waiting: AtomicU64,
    over_budget: AtomicBool,
    /// Orders the updates of the remaining gauge (see [`Drain::connection_ended`]).
    books: Mutex<()>,
}

/// Counts a `/prestop` caller until its answer is on its way.
#[derive(Debug)]
pub struct PrestopWaiter<'a>(&'a Drain);

impl Drop for PrestopWaiter<'_> {
    fn drop(&mut self) {
        self.0.prestop_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one step of a running drain may change: the controller's only way to write the
/// shared state (handed out by `Drain::step`, with the cancel gate held).
struct Step<'a>(&'a Drain);

impl Step<'_> {
    /// Seals the registry and takes its list: from here every connection is either
    /// refused or scheduled.
    fn seal(&self) -> Vec<Arc<ConnHandle>> {
        self.0.connections.seal()
    }

    /// The stagger begins over `open` connections, to end by `deadline`.
    fn start_stagger(&self, open: usize, deadline: Instant, over_budget: bool) {
        let d = self.0;
        d.set_deadline(deadline);
        d.open_at_stagger.store(open as u64, Ordering::Relaxed);
        d.set_over_budget(over_budget);
        d.metrics.drain_remaining.set(open as i64);
        d.set_phase(Phase::Staggering);
    }

    /// Moves the one deadline (an escalation, or closes caught up after a stall).
    fn move_deadline(&self, at: Instant) {
        self.0.set_deadline(at);
    }

    /// The schedule is done; the drain waits for the last close handshakes.
    fn start_closing(&self) {
        self.0.set_phase(Phase::Closing);
    }

    /// No connection is left (or the rest was cut): the drain is over.
    fn finish(&self) {
        let d = self.0;
        d.metrics.drain_remaining.set(d.connections.len() as i64);
        d.set_phase(Phase::Done);
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
    /// Connections the drain took on when the stagger started.
    pub open_at_stagger: u64,
    /// Who started the drain: `signal`, `GET /prestop` or `POST /drain`.
    pub source: Option<&'static str>,
    /// When the drain was triggered (RFC 3339).
    pub started: Option<String>,
    /// When whatever is left will be cut (RFC 3339); the process exits by then.
    pub deadline: Option<String>,
    /// Milliseconds until the deadline.
    pub deadline_in_ms: Option<u64>,
    /// Closes per second this pod may send under `--fleet-max-rate`; `None` without a
    /// fleet budget.
    pub budget_per_pod: Option<f64>,
    /// True when this drain's connections could not fit the budget within the grace
    /// period, so it closes faster than `budget_per_pod`.
    pub over_budget: bool,
    /// Of `open`, the Server-Sent Events streams (staggered like WebSockets).
    pub sse_open: i64,
    /// Plain HTTP requests whose response is not over; the process waits for them
    /// until the deadline.
    pub http_in_flight: i64,
}

impl Drain {
    /// The drain state of one sidecar, with its plan, its registry and its metrics.
    pub fn new(settings: DrainSettings, connections: Arc<Connections>, metrics: Metrics) -> Self {
        Drain {
            settings,
            connections,
            metrics,
            phase: AtomicU8::new(Phase::Serving as u8),
            phase_tx: watch::channel(Phase::Serving).0,
            trigger_tx: watch::channel(Trigger::None).0,
            cancel_tx: watch::channel(0).0,
            gate: Mutex::new(()),
            deadline_tx: watch::channel(None).0,
            times: Mutex::new(Times::default()),
            open_at_stagger: AtomicU64::new(0),
            closed_by_schedule: AtomicU64::new(0),
            closed_by_deadline: AtomicU64::new(0),
            prestop_waiting: AtomicU64::new(0),
            over_budget: AtomicBool::new(false),
            books: Mutex::new(()),
        }
    }

    /// The drain plan.
    pub fn settings(&self) -> &DrainSettings {
        &self.settings
    }

    /// Asks for a drain. Returns true when this call started or escalated it. When it
    /// starts one, readiness is off and the status says so before this returns, so an
    /// answer built right after (202 to `POST /drain`) tells the truth.
    pub fn trigger(&self, how: Trigger, source: Source) -> bool {
        // Everything is decided inside the watch's lock, which `cancel` holds too: a
        // cancel sees the drain either before this trigger or after it, with its source
        // already switched, never in between.
        let started = self.trigger_tx.send_if_modified(|t| {
            // A kubelet or a signal arriving during an operator's drain makes it theirs.
            if let Some(s) = self.times().source.as_mut()
                && *s == Source::Operator
                && source != Source::Operator
            {
                *s = source;
            }
            if how > *t {
                // Logged before the controller wakes, so the log reads in order.
                info!(source = source.as_str(), trigger = ?how, "drain requested");
                if *t == Trigger::None {
                    self.begin(source);
                }
                *t = how;
                true
            } else {
                false
            }
        });
        #[cfg(test)]
        tests::after_trigger_decision(self);
        started
    }

    /// Called once per drain, inside the trigger: the announce phase starts now.
    fn begin(&self, source: Source) {
        *self.times() = Times {
            started: Some(SystemTime::now()),
            source: Some(source),
        };
        self.reset_counts();
        self.set_over_budget(false);
        self.metrics.draining.set(1);
        self.set_deadline(Instant::now() + self.settings.total_length(self.connections.len()));
        self.set_phase(Phase::Announcing);
    }

    /// Zeroes the counts `GET /drain` reports (a new drain, or a cancelled one).
    fn reset_counts(&self) {
        for c in [
            &self.open_at_stagger,
            &self.closed_by_schedule,
            &self.closed_by_deadline,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Cancels a drain that an operator started: readiness returns, the connections
    /// still open stay, closes not yet sent are withdrawn. A drain started by a signal or
    /// by `/prestop` is the pod going away and is not cancelled.
    pub fn cancel(&self) -> Result<(), CancelRefused> {
        let mut refused = None;
        self.trigger_tx.send_if_modified(|t| {
            let source = self.times().source;
            match (*t, source) {
                (Trigger::None, _) => refused = Some(CancelRefused::NotDraining),
                (_, Some(s @ (Source::Signal | Source::Prestop))) => {
                    refused = Some(CancelRefused::PodTerminating(s.as_str()));
                }
                _ => {
                    let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
                    info!("drain cancelled");
                    *t = Trigger::None;
                    self.cancel_tx.send_modify(|g| *g += 1);
                    self.connections.unseal();
                    for h in self.connections.snapshot() {
                        h.withdraw_drain_close();
                    }
                    *self.times() = Times::default();
                    self.reset_counts();
                    self.metrics.draining.set(0);
                    self.metrics.drain_remaining.set(0);
                    self.set_over_budget(false);
                    self.deadline_tx.send_replace(None);
                    self.set_phase(Phase::Serving);
                    return true;
                }
            }
            false
        });
        refused.map_or(Ok(()), Err)
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

    /// Resolves when the drain is over (no connection left).
    pub async fn wait_done(&self) {
        let mut rx = self.phase_tx.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Done).await;
    }

    /// Resolves when the drain is over or was cancelled (what `/prestop` waits for).
    pub async fn wait_done_or_cancelled(&self) {
        let mut rx = self.phase_tx.subscribe();
        let _ = rx
            .wait_for(|p| *p == Phase::Done || *p == Phase::Serving)
            .await;
    }

    /// When whatever is left will be cut: the one deadline, reported by `GET /drain`
    /// and honoured by the process. `None` before a drain.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline_tx.borrow()
    }

    /// The phase as it changes, for tasks that act at a phase (the HTTP front end
    /// closing idle keep-alive connections over the window).
    pub fn phase_changes(&self) -> watch::Receiver<Phase> {
        self.phase_tx.subscribe()
    }

    /// The deadline as it moves, for tasks that act at it (cutting HTTP responses
    /// still in flight).
    pub fn deadline_changes(&self) -> watch::Receiver<Option<Instant>> {
        self.deadline_tx.subscribe()
    }

    /// Resolves when the deadline moves (more connections than announced, a stall, an
    /// escalation).
    pub async fn deadline_changed(&self) {
        let mut rx = self.deadline_tx.subscribe();
        let _ = rx.changed().await;
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

    /// The triggers as they come, for the controller.
    fn triggers(&self) -> watch::Receiver<Trigger> {
        self.trigger_tx.subscribe()
    }

    /// The current drain's generation, and a future that resolves `true` once a cancel
    /// has ended it (`false` if the drain state is gone).
    fn generation(&self) -> (u64, impl std::future::Future<Output = bool> + use<>) {
        let generation = *self.cancel_tx.borrow();
        let mut cancel = self.cancel_tx.subscribe();
        let cancelled = async move { cancel.wait_for(|g| *g != generation).await.is_ok() };
        (generation, cancelled)
    }

    /// The registry whose connections the drain closes.
    fn registry(&self) -> &Connections {
        &self.connections
    }

    /// Frames dropped at a close so far, both ways (the drain's last log line).
    fn dropped_frames(&self) -> i64 {
        self.metrics.client_to_app.dropped_frames.get()
            + self.metrics.app_to_client.dropped_frames.get()
    }

    /// Runs one step of the drain of generation `generation`, unless it was cancelled:
    /// the controller changes the shared state only through the [`Step`] it is handed,
    /// with the gate held, so no step of a cancelled drain lands after the cancel.
    fn step<R>(&self, generation: u64, f: impl FnOnce(&Step<'_>) -> R) -> Option<R> {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        (*self.cancel_tx.borrow() == generation).then(|| f(&Step(self)))
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.phase_tx.send_replace(phase);
    }

    /// Records whether the drain under way is over the fleet budget (status and gauge).
    fn set_over_budget(&self, over: bool) {
        self.over_budget.store(over, Ordering::Relaxed);
        self.metrics.drain_over_budget.set(i64::from(over));
    }

    fn set_deadline(&self, at: Instant) {
        self.deadline_tx.send_replace(Some(at));
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accounts for a relay that ended, and takes it out of the registry. Only the
    /// drain's own closes count here: a close asked for by `/shed` or
    /// `--max-connection-age` is counted under its own reason when it is asked for; a
    /// connection cut at the deadline is the drain's. The close is counted while the
    /// connection is still registered, so the drain sees the registry empty (and
    /// reports "done") only once every close is in its counters; the remaining gauge
    /// is set after it left, under a lock, from the registry itself: the registry only
    /// shrinks while sealed, so the gauge only goes down and ends exact, whatever the
    /// threads' interleaving.
    pub fn connection_ended(&self, registration: Registration) {
        let counted = self.count_end(&registration.handle);
        drop(registration);
        if !counted {
            return;
        }
        let _books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        if self.phase() < Phase::Staggering {
            return; // cancelled meanwhile
        }
        let remaining = self.connections.len();
        self.metrics.drain_remaining.set(remaining as i64);
        let at_start = self.open_at_stagger.load(Ordering::Relaxed);
        if at_start > 0 {
            self.metrics
                .drain_progress
                .set(1.0 - (remaining as f64 / at_start as f64).min(1.0));
        }
    }

    /// Counts one ended relay in this drain's figures; true when it was the drain's.
    fn count_end(&self, handle: &ConnHandle) -> bool {
        if self.phase() < Phase::Staggering {
            return false;
        }
        let counter = match (handle.command(), handle.close_reason()) {
            (Command::Close, Some(CloseReason::Drain)) => &self.closed_by_schedule,
            (Command::Abort, _) => &self.closed_by_deadline,
            _ => return false,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.metrics.drain_closed.inc();
        true
    }

    /// The status document of `GET /drain`.
    pub fn status(&self) -> Status {
        let times = *self.times();
        let schedule = self.closed_by_schedule.load(Ordering::Relaxed);
        let deadline = self.closed_by_deadline.load(Ordering::Relaxed);
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let left = self
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        Status {
            phase: self.phase(),
            draining: self.is_draining(),
            open: self.connections.len(),
            closed: schedule + deadline,
            closed_by_schedule: schedule,
            closed_by_deadline: deadline,
            open_at_stagger: self.open_at_stagger.load(Ordering::Relaxed),
            source: times.source.map(Source::as_str),
            started: times.started.map(rfc3339),
            deadline: left.map(|l| rfc3339(SystemTime::now() + l)),
            deadline_in_ms: left.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            budget_per_pod: Some(self.settings.pod_budget()).filter(|b| *b > 0.0),
            over_budget: self.over_budget.load(Ordering::Relaxed),
            sse_open: self.metrics.sse_active.get(),
            http_in_flight: self.metrics.http_in_flight.get(),
        }
    }
}

/// How long the exit logic waits past the drain's deadline for the controller to finish
/// cutting the rest (it gives aborted relays 500 ms) before exiting anyway.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests;
