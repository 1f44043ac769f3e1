//! Counters the relay bumps on every message without sharing a cache line between
//! threads.
//!
//! A Prometheus `IntCounter` is one atomic. Every data-path thread adds to it for every
//! message relayed (bytes and messages, in both directions), so with thread per core its
//! cache line moves between cores on every message, the one cross-core cost left on the
//! hot path. A [`PerThreadCounter`] gives each thread its own slot on its own cache line
//! and sums the slots when somebody reads: the scrape is rare, the adds are not.
//!
//! Flow: relays and the buffer pool add on their thread; `Metrics::render` (and the drain's
//! report) read the sums.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Slots per counter, a power of two. Threads beyond this many share slots (still
/// exact, only slower); wsdrain runs one data-path thread per core plus its main thread.
const SLOTS: usize = 16;

/// One slot, alone on its cache line (128 bytes covers the adjacent-line prefetcher).
#[repr(align(128))]
struct Slot(AtomicI64);

/// Hands each thread its slot index, in the order threads first count.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_slot() -> usize {
    MY_SLOT.with(|s| {
        let slot = s.get();
        if slot != usize::MAX {
            return slot;
        }
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
        s.set(slot);
        slot
    })
}

/// The per-thread parts of one sum. A `static` of its own where the count is
/// process-wide (the buffer pool's), so the hot path has no lazy initialisation to check.
pub struct Slots([Slot; SLOTS]);

impl Slots {
    /// All parts at zero.
    pub const fn new() -> Self {
        Slots([const { Slot(AtomicI64::new(0)) }; SLOTS])
    }

    /// Adds `n` (may be negative) to this thread's part.
    #[inline]
    pub fn add(&self, n: i64) {
        // SLOTS is a power of two: the mask keeps the index in range without a check.
        self.0[my_slot() & (SLOTS - 1)]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every thread's part.
    pub fn get(&self) -> i64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Slots {
    fn default() -> Self {
        Self::new()
    }
}

/// A sum of per-thread parts: cheap to add to from many threads, exact when read.
/// Adds may be negative (the buffer pool counts take and give on different threads).
#[derive(Clone, Default)]
pub struct PerThreadCounter {
    slots: Arc<Slots>,
}

impl PerThreadCounter {
    /// Adds `n` to this thread's part.
    #[inline]
    pub fn add(&self, n: i64) {
        self.slots.add(n);
    }

    /// Adds `n` (a count of things relayed) to this thread's part.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        if n != 0 {
            self.add(n as i64);
        }
    }

    /// The sum of every thread's part.
    pub fn get(&self) -> i64 {
        self.slots.get()
    }
}

impl std::fmt::Debug for PerThreadCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PerThreadCounter({})", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_added_on_many_threads_sum_exactly() {
        let c = PerThreadCounter::default();
        let threads: Vec<_> = (0..SLOTS + 3)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc_by(i as u64);
                    }
                    c.add(-1);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        let want: i64 = (0..SLOTS as i64 + 3).map(|i| i * 1000 - 1).sum();
        assert_eq!(c.get(), want);
    }
}
