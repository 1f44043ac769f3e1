//! Rebalancing after a scale-up: long-lived connections never move by themselves, so a
//! pod added by the HPA idles while the old ones stay full.
//!
//! `--max-connection-age` closes connections older than the age (plus a per-connection
//! jitter) with the drain's close frame and reconnect hint, at most `--rebalance-rate`
//! per second; `POST /shed?count=N` closes N random connections spread over the drain
//! window. Both reuse the relay's graceful close and the drain scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::info;

use crate::connections::{Command, ConnHandle};
use crate::drain::scheduler;
use crate::proxy::Shared;
use crate::relay::draw_hint;

/// The extra age of connection `id`, spread evenly over `[0, jitter]` and stable for
/// the connection's life (no per-connection state needed).
fn jitter_for(id: u64, jitter: Duration) -> Duration {
    let spread = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11; // 53 well-mixed bits
    jitter.mul_f64(spread as f64 / (1u64 << 53) as f64)
}

/// Closes connections past their age, at a bounded rate, until the process ends.
/// Stops retiring once a drain has started (the drain closes everything anyway).
pub async fn retire_old_connections(shared: Arc<Shared>) {
    let opts = &shared.opts;
    let tick = Duration::from_millis(100);
    let mut budget = 0.0f64;
    let mut ticker = tokio::time::interval(tick);
    loop {
        ticker.tick().await;
        if shared.drain.is_draining() {
            return;
        }
        // No saving up while nothing is due: at most one tick's worth (plus one) at once.
        let per_tick = opts.rebalance_rate * tick.as_secs_f64();
        budget = (budget + per_tick).min(per_tick + 1.0);
        if budget < 1.0 {
            continue;
        }
        let now = Instant::now();
        let mut due: Vec<Arc<ConnHandle>> = shared
            .connections
            .snapshot()
            .into_iter()
            .filter(|h| {
                h.command() == Command::None
                    && now.duration_since(h.opened)
                        >= opts.max_connection_age
                            + jitter_for(h.id, opts.max_connection_age_jitter)
            })
            .collect();
        due.sort_by_key(|h| h.opened);
        for handle in due.iter().take(budget as usize) {
            handle.close(draw_hint(opts.drain.reconnect_jitter));
            shared
                .metrics
                .rebalanced
                .with_label_values(&["max_age"])
                .inc();
            budget -= 1.0;
        }
    }
}

/// Closes `count` random open connections spread over the drain window. Returns how
/// many will be closed.
pub fn shed(shared: &Arc<Shared>, count: usize) -> usize {
    let mut handles: Vec<_> = shared
        .connections
        .snapshot()
        .into_iter()
        .filter(|h| h.command() == Command::None)
        .collect();
    handles.shuffle(&mut rand::rng());
    handles.truncate(count);
    let n = handles.len();
    let window = shared.opts.drain.drain_window;
    info!(connections = n, ?window, "shedding connections");
    let shared = shared.clone();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let max_rate = shared.opts.drain.drain_max_rate;
        let mut pacer =
            scheduler::Pacer::new(n, scheduler::stagger_length(n, window, max_rate), start);
        for (handle, at) in
            handles
                .iter()
                .zip(scheduler::plan(n, window, shared.opts.drain.drain_max_rate))
        {
            tokio::time::sleep_until(start + at).await;
            if let Some(at) = pacer.as_mut().map(|p| p.next(tokio::time::Instant::now())) {
                tokio::time::sleep_until(at).await;
            }
            handle.close(draw_hint(shared.opts.drain.reconnect_jitter));
            shared.metrics.rebalanced.with_label_values(&["shed"]).inc();
        }
    });
    n
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
