//! Warnings a failing neighbour could repeat thousands of times a second.
//!
//! When the app is down, every upgrade and every request fails the same way; a sidecar
//! that logs each one floods the node's log pipeline exactly when people read it. Each
//! call site gets a [`LogLimit`]: the first event of a second is logged, with how many
//! were folded since; every event is still counted in the metrics.
//!
//! Flow: a call site asks [`LogLimit::allow`] before it logs; nothing else goes in or out.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// At most one log line per second for one call site.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// The second (since process start, plus one) of the last line logged.
    last: AtomicU64,
    /// Events not logged since that line.
    folded: AtomicU64,
}

fn now_secs() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() + 1
}

impl LogLimit {
    /// A limiter that lets the first event through.
    pub const fn new() -> Self {
        LogLimit {
            last: AtomicU64::new(0),
            folded: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were folded
    /// since the last line; `None` when it is folded.
    pub fn allow(&self) -> Option<u64> {
        let now = now_secs();
        let last = self.last.load(Ordering::Relaxed);
        if now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.folded.swap(0, Ordering::Relaxed));
        }
        self.folded.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_and_the_rest_counted() {
        let limit = LogLimit::new();
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None);
        }
        // Pretend a second went by.
        limit.last.store(0, Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(1000));
    }
}
