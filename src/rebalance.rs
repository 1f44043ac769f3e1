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
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::info;

use crate::connections::{CloseReason, Command, ConnHandle};
use crate::drain::scheduler::Stagger;
use crate::hint;
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
        let per_tick = settings.rebalance_rate * tick.as_secs_f64();
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
                        >= settings.max_connection_age
                            + jitter_for(h.id, settings.max_connection_age_jitter)
            })
            .collect();
        due.sort_by_key(|h| h.opened);
        for handle in due.iter().take(budget as usize) {
            // A steady stream of closes: hints from the low-discrepancy sequence.
            if handle.close(CloseReason::MaxAge, hint::next_in_sequence(jitter)) {
                sidecar.metrics.rebalance_close("max_age");
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

/// Closes `count` random open connections, paced like the drain (its window and rate,
/// its stratified hints). A drain supersedes a shed: once one starts, the shed stops
/// and the drain closes the rest under its own name.
pub fn shed(sidecar: &Arc<Sidecar>, count: usize) -> Shedding {
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
    let mut stagger = Stagger::new(n, plan.window, plan.max_rate);
    let length = stagger.length();
    info!(connections = n, ?length, "shedding connections");
    let sidecar = sidecar.clone();
    tokio::spawn(async move {
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
                sidecar.metrics.rebalance_close("shed");
            }
        }
    });
    Shedding { count: n, length }
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
