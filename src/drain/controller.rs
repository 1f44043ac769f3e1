//! The drain controller: one task per sidecar that runs the phases when a drain is
//! triggered — announce, stagger, deadline — and starts over when an operator cancels.
//!
//! Flow: it waits on the trigger, seals the registry and takes its list of connections
//! in one step, hands each connection its close (with a stratified reconnect hint,
//! [`crate::hint`]) at the instant the [`Stagger`] gives it, then waits for the close
//! handshakes until the deadline and cuts the rest. Every change it makes to the shared
//! state goes through `Drain::step`, so a cancelled drain changes nothing after the
//! cancel.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{info, warn};

use super::scheduler::Stagger;
use super::{Drain, Phase, Trigger};
use crate::hint;
use crate::registry::CloseReason;

/// An immediate drain (second SIGTERM, SIGQUIT) gives close handshakes at most this.
const IMMEDIATE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs drains as they are triggered, until the process ends.
pub async fn run(drain: Arc<Drain>) {
    let mut trigger = drain.trigger_tx.subscribe();
    loop {
        if trigger.wait_for(|t| *t != Trigger::None).await.is_err() {
            return;
        }
        let generation = *drain.cancel_tx.borrow();
        let mut cancel = drain.cancel_tx.subscribe();
        let cancelled = async move { cancel.wait_for(|g| *g != generation).await.is_ok() };
        tokio::pin!(cancelled);
        let alive = tokio::select! {
            // Over. A drain an operator started can still be cancelled, which puts the
            // pod back into service; otherwise this waits for the process's end.
            _ = drain_once(&drain, generation, trigger.clone()) => cancelled.await,
            alive = &mut cancelled => alive,
        };
        if !alive {
            return;
        }
        // `Drain::cancel` has reset the state; wait for the next trigger.
    }
}

fn is_immediate(rx: &watch::Receiver<Trigger>) -> bool {
    *rx.borrow() == Trigger::Immediate
}

/// One drain, from the trigger to no connection left. `None` when it was cancelled.
async fn drain_once(
    drain: &Drain,
    generation: u64,
    mut trigger: watch::Receiver<Trigger>,
) -> Option<()> {
    let settings = drain.settings().clone();
    let conns = &drain.connections;
    let metrics = &drain.metrics;
    let started = Instant::now();

    // Announce: readiness went off in `Drain::trigger`.
    info!(delay = ?settings.delay, open = conns.len(), "drain: announce (readiness off)");
    if !is_immediate(&trigger) {
        let _ = timeout(
            settings.delay,
            trigger.wait_for(|t| *t == Trigger::Immediate),
        )
        .await;
    }

    // Stagger: seal the registry and take its list in one step, so every connection
    // is either refused or scheduled.
    let mut handles = drain.step(generation, || conns.seal())?;
    handles.shuffle(&mut rand::rng());
    let n = handles.len();
    let now_immediate = is_immediate(&trigger);
    let (length, close_timeout) = if now_immediate {
        (
            Duration::ZERO,
            settings.close_timeout.min(IMMEDIATE_CLOSE_TIMEOUT),
        )
    } else {
        (settings.stagger_length(n), settings.close_timeout)
    };
    let over_budget = !now_immediate && settings.over_budget(n);
    if over_budget {
        warn!(
            connections = n,
            budget_per_pod = settings.pod_budget(),
            planned_rate = n as f64 / length.as_secs_f64().max(f64::MIN_POSITIVE),
            grace_period = ?settings.grace_period,
            "drain: over the fleet budget; the connections cannot be closed at this pod's share of --fleet-max-rate within the grace period, so the drain uses the grace period fully"
        );
    }
    let mut stagger = Stagger::new(n, length);
    let mut deadline = stagger.start() + stagger.length() + close_timeout;
    drain.step(generation, || {
        drain.set_deadline(deadline);
        drain
            .open_at_stagger
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
        drain.set_over_budget(over_budget);
        metrics.drain_remaining.set(n as i64);
        drain.set_phase(Phase::Staggering);
    })?;
    info!(connections = n, stagger = ?stagger.length(), "drain: stagger (closing connections on schedule)");
    let jitter = settings.reconnect_jitter;
    if !stagger.length().is_zero() {
        while !is_immediate(&trigger) {
            let turn = tokio::select! {
                turn = stagger.wait_turn() => turn,
                _ = trigger.wait_for(|t| *t == Trigger::Immediate) => None,
            };
            let Some(i) = turn else { break };
            drain.step(generation, || {
                handles[i].close(CloseReason::Drain, hint::stratified(i, n, jitter));
            })?;
        }
    }
    // Everything not closed on schedule goes now (a zero window, or an escalation),
    // with evenly spaced hints in shuffled order.
    let rest = &handles[n - stagger.remaining()..];
    if !rest.is_empty() {
        let m = rest.len();
        drain.step(generation, || {
            for (j, h) in rest.iter().enumerate() {
                h.close(CloseReason::Drain, hint::stratified(j, m, jitter));
            }
        })?;
        if !now_immediate && is_immediate(&trigger) {
            deadline = deadline.min(Instant::now() + IMMEDIATE_CLOSE_TIMEOUT);
            drain.step(generation, || drain.set_deadline(deadline))?;
        }
    }
    drop(handles);
    // Closes caught up after a stall may end past the window: each still gets its time.
    if !is_immediate(&trigger) {
        let late = Instant::now() + close_timeout;
        if late > deadline {
            deadline = late;
            drain.step(generation, || drain.set_deadline(deadline))?;
        }
    }

    // Deadline.
    drain.step(generation, || drain.set_phase(Phase::Closing))?;
    info!(
        open = conns.len(),
        "drain: schedule done, waiting for close handshakes"
    );
    loop {
        tokio::select! {
            _ = conns.wait_empty() => break,
            _ = sleep_until(deadline) => break,
            _ = trigger.wait_for(|t| *t == Trigger::Immediate), if !is_immediate(&trigger) => {
                deadline = deadline.min(Instant::now() + IMMEDIATE_CLOSE_TIMEOUT);
                drain.step(generation, || drain.set_deadline(deadline))?;
            }
        }
    }
    let left = conns.snapshot();
    if !left.is_empty() {
        info!(
            connections = left.len(),
            "drain: deadline reached, closing the rest"
        );
        drain.step(generation, || {
            for handle in &left {
                handle.abort();
            }
        })?;
        drop(left);
        let _ = timeout(Duration::from_millis(500), conns.wait_empty()).await;
    }
    drain.step(generation, || {
        metrics.drain_remaining.set(conns.len() as i64);
        drain.set_phase(Phase::Done);
    })?;
    let status = drain.status();
    let dropped =
        metrics.client_to_app.dropped_frames.get() + metrics.app_to_client.dropped_frames.get();
    info!(
        closed_by_schedule = status.closed_by_schedule,
        closed_by_deadline = status.closed_by_deadline,
        dropped_frames = dropped,
        took = ?started.elapsed(),
        "drain: done"
    );
    Some(())
}
