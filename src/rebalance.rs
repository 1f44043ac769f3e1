//! Rebalancing after a scale-up: long-lived connections never move by themselves, so a
//! pod added by the HPA idles while the old ones stay full.
//!
//! `--max-connection-age` closes connections older than the age (plus a per-connection
//! jitter) with the drain's close frame and reconnect hint, at most `--rebalance-rate`
//! per second; `POST /shed?count=N` closes N random connections spread over the drain
//! window. Both reuse the relay's graceful close and the drain scheduler.
//!
//! Flow: reads the registry's handles and the drain plan; writes close commands (with
//! hints from [`crate::hint`]) into the handles and counts in the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::info;

use crate::drain::scheduler::Stagger;
use crate::hint;
use crate::registry::{CloseReason, Command, ConnHandle};
use crate::state::Sidecar;

/// The extra age of connection `id`, spread evenly over `[0, jitter]` and stable for
/// the connection's life (no per-connection state needed).
fn jitter_for(id: u64, jitter: Duration) -> Duration {
    let spread = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11; // 53 well-mixed bits
    jitter.mul_f64(spread as f64 / (1u64 << 53) as f64)
}

/// Closes connections past their age, at a bounded rate, until the process ends.
/// Pauses while a drain is under way (the drain closes everything anyway) and resumes
/// if an operator cancels it.
pub async fn retire_old_connections(sidecar: Arc<Sidecar>) {
    let settings = &sidecar.settings;
    let jitter = sidecar.drain.settings().reconnect_jitter;
    let tick = Duration::from_millis(100);
    let mut budget = 0.0f64;
    let mut ticker = tokio::time::interval(tick);
    loop {
        ticker.tick().await;
        if sidecar.drain.is_draining() {
            budget = 0.0;
            continue;
        }
        // No saving up while nothing is due: at most one tick's worth (plus one) at once.
        let per_tick = settings.rebalance.rate * tick.as_secs_f64();
        budget = (budget + per_tick).min(per_tick + 1.0);
        if budget < 1.0 {
            continue;
        }
        let now = Instant::now();
        let mut due: Vec<Arc<ConnHandle>> = sidecar
            .connections
            .snapshot()
            .into_iter()
            .filter(|h| {
                h.command() == Command::None
                    && now.duration_since(h.opened)
                        >= settings.rebalance.max_age
                            + jitter_for(h.id, settings.rebalance.max_age_jitter)
            })
            .collect();
        due.sort_by_key(|h| h.opened);
        for handle in due.iter().take(budget as usize) {
            // A steady stream of closes: hints from the low-discrepancy sequence.
            if handle.close(CloseReason::MaxAge, hint::next_in_sequence(jitter)) {
                sidecar.metrics.rebalance_close(CloseReason::MaxAge);
            }
            budget -= 1.0;
        }
    }
}

/// What `POST /shed` started.
#[derive(Debug, Clone, Copy)]
pub struct Shedding {
    /// Connections that will be closed.
    pub count: usize,
    /// How long the closes are spread over (the drain window, stretched by
    /// `--drain-max-rate`).
    pub length: Duration,
}

/// A second `POST /shed` while one runs (answered 409).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a shed is under way; retry once it is over")]
pub struct ShedBusy;

/// The running shed's claim on `Sidecar::shedding`, given back when its stagger ends.
/// One shed at a time, so two overlapping `POST /shed` never pick the same
/// connections, promise closes that do not happen, or run side by side at twice the
/// planned rate.
struct ShedClaim(Arc<Sidecar>);

impl Drop for ShedClaim {
    fn drop(&mut self) {
        self.0.shedding.store(false, Ordering::Release);
    }
}

/// Closes `count` random open connections, paced like the drain (its window and rate,
/// its stratified hints). A drain supersedes a shed: once one starts, the shed stops
/// and the drain closes the rest under its own name. One shed at a time: a call while
/// one runs is [`ShedBusy`].
pub fn shed(sidecar: &Arc<Sidecar>, count: usize) -> Result<Shedding, ShedBusy> {
    if sidecar.shedding.swap(true, Ordering::AcqRel) {
        return Err(ShedBusy);
    }
    let claim = ShedClaim(sidecar.clone());
    let mut handles: Vec<_> = sidecar
        .connections
        .snapshot()
        .into_iter()
        .filter(|h| h.command() == Command::None)
        .collect();
    handles.shuffle(&mut rand::rng());
    handles.truncate(count);
    let n = handles.len();
    let plan = sidecar.drain.settings().clone();
    let mut stagger = Stagger::new(n, plan.stagger_length(n));
    let length = stagger.length();
    info!(connections = n, ?length, "shedding connections");
    let sidecar = sidecar.clone();
    tokio::spawn(async move {
        let _claim = claim;
        while let Some(i) = stagger.wait_turn().await {
            if sidecar.drain.is_draining() {
                info!(
                    left = stagger.remaining() + 1,
                    "shedding stopped: a drain took over"
                );
                return;
            }
            let hint_ms = hint::stratified(i, n, plan.reconnect_jitter);
            if handles[i].close(CloseReason::Shed, hint_ms) {
                sidecar.metrics.rebalance_close(CloseReason::Shed);
            }
        }
    });
    Ok(Shedding { count: n, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_stable_and_spread_over_the_range() {
        let j = Duration::from_secs(100);
        assert_eq!(jitter_for(7, j), jitter_for(7, j));
        let mut tenths = [0usize; 10];
        for id in 1..=10_000 {
            let d = jitter_for(id, j);
            assert!(d <= j);
            tenths[(d.as_secs_f64() / 10.0) as usize] += 1;
        }
        assert!(
            tenths.iter().all(|n| (800..=1200).contains(n)),
            "{tenths:?}"
        );
        assert_eq!(jitter_for(3, Duration::ZERO), Duration::ZERO);
    }
}
