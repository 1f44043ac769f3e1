//! Gives memory back to the kernel after a burst of connections.
//!
//! Every upgrade briefly uses hyper's read and write buffers (8 KiB and more, on the
//! client side and on the app side) and frees them once the relay takes over. glibc's
//! allocator keeps freed memory in the process, and since those buffers sit between the
//! long-lived per-connection allocations (task, registration, socket state), the pages
//! they freed are not at the top of the heap and are never returned on their own. After
//! a reconnect storm the sidecar's RSS then stays at the storm's high-water mark, which
//! is what a memory limit or a memory-based HPA sees. `malloc_trim(0)` (glibc 2.8+)
//! releases every whole free page in every arena, so once a second, when connections
//! were opened or closed since the last look, wsdrain calls it. Measured with 5,000 idle
//! connections opened 200 at a time: see docs/performance.md.
//!
//! Only on glibc: musl's allocator (the static image) returns free memory by itself.
//!
//! Flow: reads the connection counters once a second; calls `malloc_trim` when they
//! moved; nothing goes out but freed pages.

use std::time::Duration;

use crate::metrics::Metrics;

/// How often the trimmer looks for churn.
const EVERY: Duration = Duration::from_secs(1);

/// Starts the trimmer on the current runtime (glibc only; elsewhere nothing to do).
pub fn start(metrics: Metrics) {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        tokio::spawn(run(metrics));
    }
}

/// Trims the heap after each second in which connections came or went.
async fn run(metrics: Metrics) {
    let mut seen = (metrics.total.get(), metrics.active.get());
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = (metrics.total.get(), metrics.active.get());
        if now != seen {
            seen = now;
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
