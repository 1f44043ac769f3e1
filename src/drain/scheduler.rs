//! The drain scheduler: when each connection gets its close frame, and how long a drain
//! can last.
//!
//! Closing every client at once is what makes a reconnect storm. The scheduler spreads
//! the closes evenly over the drain window (and no faster than `--drain-max-rate` or
//! this pod's share of the fleet budget, `--fleet-max-rate / --max-concurrent-drains`:
//! rates of independent drains add, so K pods at R/K each keep the fleet at R), in
//! a random order chosen by the caller, and paces catch-up after a stall. It is the one
//! place that knows the drain's arithmetic: the controller (`drain/controller.rs`),
//! `POST /shed`, the exit bound of the process and the injector's
//! `terminationGracePeriodSeconds` all ask [`DrainSettings`] (the plan of
//! `drain/plan.rs`); durations and instants go out. Nothing here can panic on
//! a setting: the parsers bound every value, and every conversion saturates anyway.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::plan::DrainSettings;

/// How far above the planned rate closes may run while catching up.
pub const PACE_FACTOR: f64 = 1.25;

/// The longest span any schedule reports: far beyond a valid setting, short enough
/// that adding it to an `Instant` cannot overflow.
pub const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a drain's end keeps of the grace period besides the announce phase and the close
/// timeout: the exit logic's second, and one to spare.
pub const GRACE_RESERVE: Duration = Duration::from_secs(2);

impl DrainSettings {
    /// Closes per second this pod may send under the fleet budget: `--fleet-max-rate`
    /// divided by `--max-concurrent-drains`; 0 = no budget.
    pub fn pod_budget(&self) -> f64 {
        if self.fleet_max_rate > 0.0 {
            self.fleet_max_rate / f64::from(self.max_concurrent_drains.max(1))
        } else {
            0.0
        }
    }

    /// The per-pod close rate limit: the lower of `--drain-max-rate` and the fleet
    /// budget's share; 0 = no limit.
    pub fn rate_limit(&self) -> f64 {
        match (self.max_rate, self.pod_budget()) {
            (r, 0.0) | (0.0, r) => r,
            (r, b) => r.min(b),
        }
    }

    /// The longest stagger the grace period leaves room for; `None` when the grace
    /// period is not known.
    pub fn stagger_bound(&self) -> Option<Duration> {
        (!self.grace_period.is_zero()).then(|| {
            self.grace_period
                .saturating_sub(self.delay)
                .saturating_sub(self.close_timeout)
                .saturating_sub(GRACE_RESERVE)
        })
    }

    /// How long a stagger of `n` connections lasts: the window, or longer under a rate
    /// limit (`--drain-max-rate`, the fleet budget), but never past what the grace period
    /// leaves (a window set longer than that is kept as set).
    pub fn stagger_length(&self, n: usize) -> Duration {
        let wanted = stagger_length(n, self.window, self.rate_limit());
        match self.stagger_bound() {
            Some(bound) => wanted.min(bound.max(self.window)),
            None => wanted,
        }
    }

    /// True when `n` connections cannot be closed within the grace period at the fleet
    /// budget's per-pod rate: the drain then uses the grace period fully and closes
    /// faster than its share.
    pub fn over_budget(&self, n: usize) -> bool {
        let budget = self.pod_budget();
        if budget <= 0.0 || n == 0 {
            return false;
        }
        let length = self.stagger_length(n).as_secs_f64();
        length <= 0.0 || n as f64 / length > budget * (1.0 + 1e-9)
    }

    /// The most a drain of `n` connections takes from its trigger: announce + stagger +
    /// close timeout. The process's exit bound and the pod's grace period derive from it.
    pub fn total_length(&self, n: usize) -> Duration {
        self.delay
            .saturating_add(self.stagger_length(n))
            .saturating_add(self.close_timeout)
            .min(FOREVER)
    }
}

/// `secs` as a Duration, clamped to `[0, FOREVER]` (NaN counts as 0).
fn saturating_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs)
        .unwrap_or(FOREVER)
        .min(FOREVER)
}

/// Seconds between two closes of `n` over `window` under `max_rate`.
fn spacing(n: usize, window: Duration, max_rate: f64) -> f64 {
    let mut spacing = window.as_secs_f64() / n.max(1) as f64;
    if max_rate > 0.0 && max_rate.is_finite() {
        spacing = spacing.max(1.0 / max_rate);
    }
    spacing
}

/// When each of `n` connections is closed, as offsets from the start of the stagger.
///
/// The i-th close (0-based) is at `(i + 0.5) * spacing`: the window is cut into `n`
/// equal slots and each close sits in the middle of its slot, so every tenth of the
/// window carries the same share. `spacing` is `window / n`, widened to `1 / max_rate`
/// when a rate limit is set; then the stagger lasts longer than the window.
pub fn plan(n: usize, window: Duration, max_rate: f64) -> Vec<Duration> {
    let spacing = spacing(n, window, max_rate);
    (0..n)
        .map(|i| saturating_secs((i as f64 + 0.5) * spacing))
        .collect()
}

/// How long a stagger of `n` connections lasts: the window, or longer under a rate limit.
pub fn stagger_length(n: usize, window: Duration, max_rate: f64) -> Duration {
    let window = window.min(FOREVER);
    if max_rate > 0.0 {
        window.max(saturating_secs(n as f64 / max_rate))
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
        let wait = saturating_secs((1.0 - self.tokens) / self.rate);
        self.tokens = 0.0;
        self.last += wait;
        self.last
    }
}

/// One staggered close sequence in progress: the drain's and `/shed`'s shared pacing.
/// Each [`Stagger::wait_turn`] sleeps until the next close's planned instant, then as
/// long as the [`Pacer`] asks, and hands out its index.
#[derive(Debug)]
pub struct Stagger {
    start: Instant,
    n: usize,
    spacing: f64,
    length: Duration,
    next: usize,
    pacer: Option<Pacer>,
}

impl Stagger {
    /// A stagger of `n` closes starting now, evenly spread over `length` (from
    /// [`DrainSettings::stagger_length`], or zero for all at once).
    pub fn new(n: usize, length: Duration) -> Stagger {
        let start = Instant::now();
        let length = length.min(FOREVER);
        Stagger {
            start,
            n,
            spacing: length.as_secs_f64() / n.max(1) as f64,
            length,
            next: 0,
            pacer: Pacer::new(n, length, start),
        }
    }

    /// How long the stagger lasts as planned.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// When the stagger started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// How many closes are still to come.
    pub fn remaining(&self) -> usize {
        self.n - self.next
    }

    /// Waits for the next close's turn and returns its index; `None` when all are out.
    /// Dropping the future while it sleeps loses no turn.
    pub async fn wait_turn(&mut self) -> Option<usize> {
        if self.next >= self.n {
            return None;
        }
        let planned = self.start + saturating_secs((self.next as f64 + 0.5) * self.spacing);
        sleep_until(planned).await;
        if let Some(pacer) = self.pacer.as_mut() {
            let at = pacer.next(Instant::now());
            sleep_until(at).await;
        }
        let i = self.next;
        self.next += 1;
        Some(i)
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
    fn total_length_is_delay_plus_stagger_plus_close_timeout() {
        let s = DrainSettings {
            delay: Duration::from_secs(5),
            window: Duration::from_secs(30),
            max_rate: 10.0,
            close_timeout: Duration::from_secs(5),
            ..DrainSettings::default()
        };
        assert_eq!(s.total_length(100), Duration::from_secs(40));
        assert_eq!(s.total_length(1000), Duration::from_secs(110));
    }

    #[test]
    fn the_fleet_budget_divides_the_rate_and_the_grace_period_bounds_the_stretch() {
        let mut s = DrainSettings {
            window: Duration::from_secs(2),
            fleet_max_rate: 100.0,
            max_concurrent_drains: 4,
            ..DrainSettings::default()
        };
        assert_eq!(s.pod_budget(), 25.0);
        assert_eq!(s.stagger_length(1000), Duration::from_secs(40));
        assert!(!s.over_budget(1000));
        // --drain-max-rate still wins when it is lower; the budget when it is.
        s.max_rate = 10.0;
        assert_eq!(s.rate_limit(), 10.0);
        s.max_rate = 50.0;
        assert_eq!(s.rate_limit(), 25.0);
        // 90 s grace - 5 s delay - 5 s close timeout - 2 s reserve = 78 s of stagger.
        s.grace_period = Duration::from_secs(90);
        assert_eq!(s.stagger_bound(), Some(Duration::from_secs(78)));
        assert_eq!(s.stagger_length(1000), Duration::from_secs(40));
        assert_eq!(s.stagger_length(5000), Duration::from_secs(78));
        assert!(s.over_budget(5000) && !s.over_budget(1950));
        assert!(s.total_length(5000) <= s.grace_period);
        // A window set longer than the grace period allows is kept as set.
        s.window = Duration::from_secs(100);
        assert_eq!(s.stagger_length(10), Duration::from_secs(100));
        // No budget: nothing changes.
        let plain = DrainSettings::default();
        assert_eq!(plain.pod_budget(), 0.0);
        assert!(!plain.over_budget(1_000_000));
        assert_eq!(plain.stagger_length(1_000_000), plain.window);
    }

    #[test]
    fn stratified_hints_keep_arrivals_within_the_budget() {
        // Closes at (i + ½)·L/n plus hints (i + ½)·J/n arrive evenly over L + J, so the
        // clients that honour the hint arrive slower than the closes go out.
        let s = DrainSettings {
            fleet_max_rate: 100.0,
            max_concurrent_drains: 4,
            reconnect_jitter: Duration::from_secs(5),
            ..DrainSettings::default()
        };
        let n = 1000;
        let length = s.stagger_length(n).as_secs_f64();
        let mut arrivals: Vec<f64> = (0..n)
            .map(|i| {
                (i as f64 + 0.5) * length / n as f64
                    + f64::from(crate::hint::stratified(i, n, s.reconnect_jitter)) / 1000.0
            })
            .collect();
        arrivals.sort_by(f64::total_cmp);
        let mut per_second = vec![0usize; arrivals[n - 1] as usize + 1];
        for a in &arrivals {
            per_second[*a as usize] += 1;
        }
        let peak = per_second.iter().copied().max().unwrap_or(0);
        assert!(peak as f64 <= s.pod_budget(), "{per_second:?}");
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

    #[test]
    fn extreme_rates_saturate_instead_of_panicking() {
        // What `--drain-max-rate 1e-300` used to do on SIGTERM (the parser now refuses it).
        let times = plan(3, Duration::from_secs(1), 1e-300);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(stagger_length(3, Duration::from_secs(1), 1e-300) <= FOREVER);
        let s = DrainSettings {
            delay: Duration::MAX,
            window: Duration::MAX,
            max_rate: f64::MIN_POSITIVE,
            close_timeout: Duration::MAX,
            ..DrainSettings::default()
        };
        assert_eq!(s.total_length(usize::MAX), FOREVER);
        let _ = Pacer::new(usize::MAX, Duration::from_nanos(1), Instant::now())
            .map(|mut p| p.next(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stagger_hands_out_each_turn_once_in_its_slot() {
        let mut s = Stagger::new(4, Duration::from_secs(4));
        let start = s.start();
        let mut seen = Vec::new();
        while let Some(i) = s.wait_turn().await {
            seen.push((i, Instant::now().duration_since(start)));
        }
        assert_eq!(seen.len(), 4);
        for (k, (i, at)) in seen.iter().enumerate() {
            assert_eq!(*i, k);
            let want = Duration::from_millis(500 + 1000 * k as u64);
            assert!(at.abs_diff(want) < Duration::from_millis(20), "{at:?}");
        }
        assert_eq!(s.remaining(), 0);
    }
}
