//! The reconnect hint: `{"reconnect_after_ms":N}` in the reason of wsdrain's close
//! frames, and how N is chosen so that clients honouring it arrive evenly.
//!
//! Independent random draws clump: 300 uniform draws over 2 s put 9–11 clients into the
//! busiest 100 ms where an even spread puts 5, so clients that obey the hint used to
//! arrive *less* evenly than clients that ignore it. The hints are therefore stratified
//! instead of drawn:
//! - a staggered close sequence (drain, shed) gives the i-th close of n the hint
//!   `(i + ½)·jitter/n`; close time `(i + ½)·window/n` plus hint is then
//!   `(i + ½)·(window + jitter)/n`: the arrivals are evenly spaced over window + jitter;
//! - closes that happen at one instant get the same evenly spaced values, in the
//!   drain's shuffled order (a random permutation);
//! - closes that come one by one with no count known in advance (`--max-connection-age`,
//!   the app going away) take the next value of a golden-ratio (Kronecker) sequence,
//!   whose every run of consecutive values is spread almost as evenly as a permutation
//!   (three-gap theorem), unlike independent draws.
//!
//! Every hint is within `[0, --reconnect-jitter]`. Data flows in as counts and the
//! jitter, out as milliseconds; the relay puts them on the wire.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The reason string of a close frame carrying the reconnect hint.
pub fn reason(hint_ms: u32) -> String {
    format!("{{\"reconnect_after_ms\":{hint_ms}}}")
}

/// The hint of the `i`-th (0-based) of `n` closes: `(i + ½)·jitter/n` in milliseconds.
pub fn stratified(i: usize, n: usize, jitter: Duration) -> u32 {
    let max = jitter_ms(jitter);
    if n == 0 {
        return 0;
    }
    let i = i.min(n - 1);
    let ms = (i as f64 + 0.5) * f64::from(max) / n as f64;
    (ms as u32).min(max)
}

/// The next hint of the process-wide low-discrepancy sequence, for closes that come one
/// at a time: `frac(start + k·φ⁻¹)·jitter`. The start is random per process, so two pods
/// whose apps die together do not hand out the same hints.
pub fn next_in_sequence(jitter: Duration) -> u32 {
    /// 2^64 / φ: adding it modulo 2^64 steps the fraction by φ⁻¹ ≈ 0.618.
    const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| AtomicU64::new(rand::random()));
    let x = state.fetch_add(STEP, Ordering::Relaxed).wrapping_add(STEP);
    let max = jitter_ms(jitter);
    let frac = (x >> 11) as f64 / (1u64 << 53) as f64;
    ((frac * (f64::from(max) + 1.0)) as u32).min(max)
}

fn jitter_ms(jitter: Duration) -> u32 {
    u32::try_from(jitter.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest bucket ÷ the even share, for hints spread over `buckets` buckets.
    fn peak_ratio(hints: &[u32], jitter_ms: u32, buckets: usize) -> f64 {
        let mut counts = vec![0usize; buckets];
        for &h in hints {
            let b = (h as usize * buckets / (jitter_ms as usize + 1)).min(buckets - 1);
            counts[b] += 1;
        }
        let even = hints.len() as f64 / buckets as f64;
        *counts.iter().max().unwrap_or(&0) as f64 / even
    }

    #[test]
    fn stratified_hints_are_even_and_within_the_jitter() {
        let jitter = Duration::from_secs(2);
        let hints: Vec<u32> = (0..300).map(|i| stratified(i, 300, jitter)).collect();
        assert!(hints.iter().all(|&h| h <= 2000));
        assert!(hints.windows(2).all(|w| w[0] <= w[1]));
        assert!(peak_ratio(&hints, 2000, 20) <= 1.0 + 1e-9);
        assert_eq!(stratified(0, 0, jitter), 0);
        assert_eq!(stratified(5, 1, Duration::ZERO), 0);
    }

    #[test]
    fn close_plus_hint_is_evenly_spaced() {
        // Close at (i+½)·W/n, hint (i+½)·J/n: arrivals at (i+½)·(W+J)/n.
        let (n, w, j) = (1000usize, 6000.0, 2000.0);
        let jitter = Duration::from_millis(2000);
        for i in 0..n {
            let close = (i as f64 + 0.5) * w / n as f64;
            let arrive = close + f64::from(stratified(i, n, jitter));
            let even = (i as f64 + 0.5) * (w + j) / n as f64;
            assert!((arrive - even).abs() <= 1.0, "{i}: {arrive} vs {even}");
        }
    }

    #[test]
    fn the_sequence_spreads_every_run_evenly_where_random_draws_clump() {
        let jitter = Duration::from_secs(5);
        let hints: Vec<u32> = (0..2000).map(|_| next_in_sequence(jitter)).collect();
        assert!(hints.iter().all(|&h| h <= 5000));
        // 50 buckets of 100 ms, 40 each when even.
        let ratio = peak_ratio(&hints, 5000, 50);
        assert!(ratio <= 1.15, "golden-ratio sequence peak {ratio}");
        // A shorter run is just as even.
        let run: Vec<u32> = (0..300).map(|_| next_in_sequence(jitter)).collect();
        assert!(peak_ratio(&run, 5000, 10) <= 1.2);
        // What this replaces: independent uniform draws.
        let drawn: Vec<u32> = (0..2000).map(|_| rand::random_range(0..=5000)).collect();
        assert!(peak_ratio(&drawn, 5000, 50) > ratio);
    }
}
