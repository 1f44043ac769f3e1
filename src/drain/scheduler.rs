//! The drain scheduler: when each open connection gets its close frame.
//!
//! Closing every client at once is what makes a reconnect storm. The scheduler spreads
//! the closes evenly over the drain window (and no faster than `--drain-max-rate`), in
//! a random order so no group of clients is always first. It is pure arithmetic; the
//! controller in `drain/mod.rs` sleeps until each instant and sends the command.

use std::time::Duration;

/// When each of `n` connections is closed, as offsets from the start of the stagger.
///
/// The i-th close (0-based) is at `(i + 0.5) * spacing`: the window is cut into `n`
/// equal slots and each close sits in the middle of its slot, so every tenth of the
/// window carries the same share. `spacing` is `window / n`, widened to `1 / max_rate`
/// when a rate limit is set; then the stagger lasts longer than the window.
pub fn plan(n: usize, window: Duration, max_rate: f64) -> Vec<Duration> {
    if n == 0 {
        return Vec::new();
    }
    let mut spacing = window.as_secs_f64() / n as f64;
    if max_rate > 0.0 {
        spacing = spacing.max(1.0 / max_rate);
    }
    (0..n)
        .map(|i| Duration::from_secs_f64((i as f64 + 0.5) * spacing))
        .collect()
}

/// How long a stagger of `n` connections lasts: the window, or longer under a rate limit.
pub fn stagger_length(n: usize, window: Duration, max_rate: f64) -> Duration {
    if max_rate > 0.0 {
        window.max(Duration::from_secs_f64(n as f64 / max_rate))
    } else {
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_spread_fills_every_tenth_equally() {
        let window = Duration::from_secs(10);
        let times = plan(1000, window, 0.0);
        assert_eq!(times.len(), 1000);
        let mut tenths = [0usize; 10];
        for t in &times {
            assert!(*t < window);
            tenths[(t.as_secs_f64() / 1.0) as usize] += 1;
        }
        assert_eq!(tenths, [100; 10]);
    }

    #[test]
    fn rate_limit_stretches_the_stagger() {
        let times = plan(100, Duration::from_secs(1), 10.0);
        let last = *times.last().unwrap();
        assert!(last > Duration::from_secs(9) && last < Duration::from_secs(10));
        assert_eq!(
            stagger_length(100, Duration::from_secs(1), 10.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn zero_window_closes_everything_at_once() {
        assert!(plan(5, Duration::ZERO, 0.0).iter().all(|t| t.is_zero()));
        assert!(plan(0, Duration::from_secs(1), 0.0).is_empty());
    }
}
