//! The drain scheduler: when each open connection gets its close frame.
//!
//! Closing every client at once is what makes a reconnect storm. The scheduler spreads
//! the closes evenly over the drain window (and no faster than `--drain-max-rate`), in
//! a random order so no group of clients is always first. It is pure arithmetic; the
//! controller in `drain/mod.rs` sleeps until each instant and sends the command.

use std::time::Duration;

use tokio::time::Instant;

/// How far above the planned rate closes may run while catching up.
pub const PACE_FACTOR: f64 = 1.25;

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

/// Caps the close rate at [`PACE_FACTOR`] × the planned rate.
///
/// The plan gives each close an instant; when the process is held up (CPU starvation, a
/// paused timer), every close that fell due meanwhile would otherwise go out at once — a
/// smaller copy of the storm the stagger exists to prevent. The pacer is a token bucket
/// holding at most 10 ms worth of closes, so overdue closes are caught up at 1.25× the
/// even rate instead.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A pacer for `n` closes over `length`; `None` when there is nothing to pace (an
    /// immediate drain closes everything at once on purpose).
    pub fn new(n: usize, length: Duration, now: Instant) -> Option<Pacer> {
        if n == 0 || length.is_zero() {
            return None;
        }
        let rate = PACE_FACTOR * n as f64 / length.as_secs_f64();
        let burst = (rate * 0.010).max(1.0);
        Some(Pacer {
            rate,
            burst,
            tokens: burst,
            last: now,
        })
    }

    /// When the next close may go (`now` or later), and accounts for it.
    pub fn next(&mut self, now: Instant) -> Instant {
        if now > self.last {
            let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return self.last.max(now);
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        self.tokens = 0.0;
        self.last += wait;
        self.last
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
    fn pacer_catches_up_after_a_stall_at_most_a_quarter_faster() {
        let t0 = Instant::now();
        // 100 closes over 1 s: 125 per second at most.
        let mut pacer = Pacer::new(100, Duration::from_secs(1), t0).expect("pacer");
        // Half a second stalled: 50 closes are overdue at once.
        let stalled = t0 + Duration::from_millis(500);
        let mut at = Vec::new();
        for _ in 0..50 {
            at.push(pacer.next(stalled));
        }
        let span = at[49].duration_since(at[0]);
        // 50 closes at 125/s take about 0.39 s, not 0.
        assert!(span >= Duration::from_millis(380), "{span:?}");
        for w in at.windows(2) {
            assert!(w[1].duration_since(w[0]) <= Duration::from_millis(9));
        }
        // On schedule (one close every 10 ms) it never delays anything.
        let mut pacer = Pacer::new(100, Duration::from_secs(1), t0).expect("pacer");
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(pacer.next(now), now);
        }
        assert!(Pacer::new(5, Duration::ZERO, t0).is_none());
    }

    #[test]
    fn zero_window_closes_everything_at_once() {
        assert!(plan(5, Duration::ZERO, 0.0).iter().all(|t| t.is_zero()));
        assert!(plan(0, Duration::from_secs(1), 0.0).is_empty());
    }
}
