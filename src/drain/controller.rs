//! The drain controller: one task per sidecar that runs the phases when a drain is
//! triggered — announce, stagger, deadline — and starts over when an operator cancels.
//!
//! Flow: it waits on the trigger, seals the registry and takes its list of connections
//! in one step, hands each connection its close (with a stratified reconnect hint,
//! [`crate::hint`]) at the instant the [`Stagger`] gives it, then waits for the close
//! handshakes until the deadline and cuts the rest. One drain is a [`Run`], one method
//! per phase. It reads the plan and the registry, and writes the shared state only
//! through the `Step` that `Drain::step` hands it (start the stagger, move the
//! deadline, start closing, finish), so a cancelled drain changes nothing after the
//! cancel and `drain/mod.rs` keeps its counters and channels to itself.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{info, warn};

use super::scheduler::Stagger;
use super::{Drain, Step, Trigger};
use crate::hint;
use crate::registry::{CloseReason, ConnHandle};

/// An immediate drain (second SIGTERM, SIGQUIT) gives close handshakes at most this.
const IMMEDIATE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs drains as they are triggered, until the process ends.
pub async fn run(drain: Arc<Drain>) {
    let mut trigger = drain.triggers();
    loop {
        if trigger.wait_for(|t| *t != Trigger::None).await.is_err() {
            return;
        }
        let (generation, cancelled) = drain.generation();
        tokio::pin!(cancelled);
        let one = Run {
            drain: &drain,
            generation,
            trigger: trigger.clone(),
        };
        let alive = tokio::select! {
            // Over. A drain an operator started can still be cancelled, which puts the
            // pod back into service; otherwise this waits for the process's end.
            _ = one.drain() => cancelled.await,
            alive = &mut cancelled => alive,
        };
        if !alive {
            return;
        }
        // `Drain::cancel` has reset the state; wait for the next trigger.
    }
}

/// One drain as it runs: the state it drives and the trigger it watches for an
/// escalation. Each phase is a method; `None` from any of them means the drain was
/// cancelled.
struct Run<'a> {
    drain: &'a Drain,
    generation: u64,
    trigger: watch::Receiver<Trigger>,
}

/// The connections the stagger closes, and when they are to be done.
struct Schedule {
    handles: Vec<Arc<ConnHandle>>,
    stagger: Stagger,
    close_timeout: Duration,
    deadline: Instant,
    immediate: bool,
}

impl Run<'_> {
    /// From the trigger to no connection left.
    async fn drain(mut self) -> Option<()> {
        let started = Instant::now();
        self.announce().await;
        let schedule = self.seal()?;
        let deadline = self.stagger(schedule).await?;
        self.wait_for_closes(deadline).await?;
        let status = self.drain.status();
        info!(
            closed_by_schedule = status.closed_by_schedule,
            closed_by_deadline = status.closed_by_deadline,
            dropped_frames = self.drain.dropped_frames(),
            took = ?started.elapsed(),
            "drain: done"
        );
        Some(())
    }

    fn step<R>(&self, f: impl FnOnce(&Step<'_>) -> R) -> Option<R> {
        self.drain.step(self.generation, f)
    }

    fn is_immediate(&self) -> bool {
        *self.trigger.borrow() == Trigger::Immediate
    }

    /// Announce: readiness went off in `Drain::trigger`; wait out `--drain-delay`
    /// unless the drain turns immediate.
    async fn announce(&mut self) {
        let delay = self.drain.settings().delay;
        let open = self.drain.registry().len();
        info!(?delay, open, "drain: announce (readiness off)");
        if !self.is_immediate() {
            let _ = timeout(delay, self.trigger.wait_for(|t| *t == Trigger::Immediate)).await;
        }
    }

    /// Seals the registry and takes its list in one step, so every connection is either
    /// refused or scheduled, and plans the stagger over them.
    fn seal(&self) -> Option<Schedule> {
        let settings = self.drain.settings();
        let mut handles = self.step(|s| s.seal())?;
        handles.shuffle(&mut rand::rng());
        let n = handles.len();
        let immediate = self.is_immediate();
        let (length, close_timeout) = if immediate {
            (
                Duration::ZERO,
                settings.close_timeout.min(IMMEDIATE_CLOSE_TIMEOUT),
            )
        } else {
            (settings.stagger_length(n), settings.close_timeout)
        };
        let over_budget = !immediate && settings.over_budget(n);
        if over_budget {
            warn!(
                connections = n,
                budget_per_pod = settings.pod_budget(),
                planned_rate = n as f64 / length.as_secs_f64().max(f64::MIN_POSITIVE),
                grace_period = ?settings.grace_period,
                "drain: over the fleet budget; the connections cannot be closed at this pod's share of --fleet-max-rate within the grace period, so the drain uses the grace period fully"
            );
        }
        let stagger = Stagger::new(n, length);
        let deadline = stagger.start() + stagger.length() + close_timeout;
        self.step(|s| s.start_stagger(n, deadline, over_budget))?;
        info!(connections = n, stagger = ?stagger.length(), "drain: stagger (closing connections on schedule)");
        Some(Schedule {
            handles,
            stagger,
            close_timeout,
            deadline,
            immediate,
        })
    }

    /// Stagger: each connection gets its close (with a stratified hint) at its instant;
    /// whatever an escalation leaves goes at once. Returns the deadline, moved if the
    /// closes ran late.
    async fn stagger(&mut self, schedule: Schedule) -> Option<Instant> {
        let Schedule {
            handles,
            mut stagger,
            close_timeout,
            mut deadline,
            immediate,
        } = schedule;
        let n = handles.len();
        let jitter = self.drain.settings().reconnect_jitter;
        if !stagger.length().is_zero() {
            while !self.is_immediate() {
                let turn = tokio::select! {
                    turn = stagger.wait_turn() => turn,
                    _ = self.trigger.wait_for(|t| *t == Trigger::Immediate) => None,
                };
                let Some(i) = turn else { break };
                self.step(|_| {
                    handles[i].close(CloseReason::Drain, hint::stratified(i, n, jitter));
                })?;
            }
        }
        // Everything not closed on schedule goes now (a zero window, or an escalation),
        // with evenly spaced hints in shuffled order.
        let rest = &handles[n - stagger.remaining()..];
        if !rest.is_empty() {
            let m = rest.len();
            self.step(|_| {
                for (j, h) in rest.iter().enumerate() {
                    h.close(CloseReason::Drain, hint::stratified(j, m, jitter));
                }
            })?;
            if !immediate && self.is_immediate() {
                deadline = deadline.min(Instant::now() + IMMEDIATE_CLOSE_TIMEOUT);
                self.step(|s| s.move_deadline(deadline))?;
            }
        }
        // Closes caught up after a stall may end past the window: each still gets its time.
        if !self.is_immediate() {
            let late = Instant::now() + close_timeout;
            if late > deadline {
                deadline = late;
                self.step(|s| s.move_deadline(deadline))?;
            }
        }
        Some(deadline)
    }

    /// Deadline: waits for the close handshakes until `deadline` (shortened by an
    /// escalation), then cuts whatever is left.
    async fn wait_for_closes(&mut self, mut deadline: Instant) -> Option<()> {
        let (drain, generation) = (self.drain, self.generation);
        let conns = drain.registry();
        self.step(|s| s.start_closing())?;
        info!(
            open = conns.len(),
            "drain: schedule done, waiting for close handshakes"
        );
        loop {
            let escalate = !self.is_immediate();
            tokio::select! {
                _ = conns.wait_empty() => break,
                _ = sleep_until(deadline) => break,
                _ = self.trigger.wait_for(|t| *t == Trigger::Immediate), if escalate => {
                    deadline = deadline.min(Instant::now() + IMMEDIATE_CLOSE_TIMEOUT);
                    drain.step(generation, |s| s.move_deadline(deadline))?;
                }
            }
        }
        let left = conns.snapshot();
        if !left.is_empty() {
            info!(
                connections = left.len(),
                "drain: deadline reached, closing the rest"
            );
            self.step(|_| {
                for handle in &left {
                    handle.abort();
                }
            })?;
            drop(left);
            let _ = timeout(Duration::from_millis(500), conns.wait_empty()).await;
        }
        self.step(|s| s.finish())
    }
}
