//! How the HTTP front end takes part in a drain: idle keep-alive client connections
//! are closed spread over the drain window (not all at once, which would be a smaller
//! reconnect storm of its own), and responses still in flight are cut at the deadline.
//!
//! Answers during a drain already carry `Connection: close`, so a busy keep-alive
//! connection closes after its current response; these turns reach the ones sitting
//! idle between requests. Each connection's turn is a point of the process-wide
//! low-discrepancy sequence ([`hint::next_in_sequence`]) over what is left of the
//! window, so any set of connections closes evenly. A connection that took a request
//! within the last [`QUIET`] is left alone at its turn (its next answer says
//! `Connection: close` anyway): closing a connection the client is about to reuse
//! races with the request it is writing, and a client that does not retry (Node's
//! agent, socket.io's polling) sees that as an error.
//!
//! Flow: `proxy::serve` awaits [`close_turn`] beside each connection and shuts it down
//! gracefully then; [`cut_at_deadline`] runs once per proxy and tells every response
//! in flight to stop when the drain's deadline passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::drain::{Drain, Phase};
use crate::hint;
use crate::state::Sidecar;

/// How long a connection must have been without a new request before its turn closes it.
pub const QUIET: Duration = Duration::from_secs(1);

/// When a client connection last took a request (or was accepted: a fresh connection
/// is one its client is about to write a request on).
#[derive(Debug)]
pub struct Activity(AtomicU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Self {
        let activity = Activity(AtomicU64::new(0));
        activity.request();
        activity
    }

    /// A request came in now.
    pub fn request(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, Ordering::Relaxed);
    }

    /// When the connection is quiet for [`QUIET`]: now, if it is already.
    fn quiet_at(&self) -> Instant {
        let last = epoch() + Duration::from_millis(self.0.load(Ordering::Relaxed));
        last + QUIET
    }
}

/// Resolves when this connection's turn to close comes in a drain (never outside one)
/// and it has been [`QUIET`] since its last request. A cancelled drain withdraws the
/// turn; the next drain gives a new one.
pub async fn close_turn(drain: &Drain, activity: &Activity) {
    let mut phase = drain.phase_changes();
    loop {
        if phase.wait_for(|p| *p >= Phase::Staggering).await.is_err() {
            return std::future::pending().await;
        }
        let window_end = drain
            .deadline()
            .map(|d| d.checked_sub(drain.settings().close_timeout).unwrap_or(d));
        let left = window_end.map_or(Duration::ZERO, |end| {
            end.saturating_duration_since(Instant::now())
        });
        let turn = Instant::now() + Duration::from_millis(hint::next_in_sequence(left).into());
        let quiet = async {
            sleep_until(turn).await;
            loop {
                let at = activity.quiet_at();
                if at <= Instant::now() {
                    return;
                }
                sleep_until(at).await;
            }
        };
        tokio::select! {
            _ = quiet => {
                if drain.is_draining() {
                    return;
                }
            }
            _ = phase.wait_for(|p| *p == Phase::Serving) => {}
        }
        // Cancelled: wait for the next drain.
        if phase.wait_for(|p| *p == Phase::Serving).await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Cuts every response still in flight when a drain's deadline passes (following the
/// deadline as it moves), and lifts the cut when an operator cancels the drain.
pub async fn cut_at_deadline(sidecar: Arc<Sidecar>) {
    let drain = &sidecar.drain;
    let mut deadline = drain.deadline_changes();
    loop {
        let at = *deadline.borrow_and_update();
        match at {
            Some(at) if !*sidecar.http.cut_signal().borrow() => {
                tokio::select! {
                    _ = sleep_until(at) => {
                        if *deadline.borrow() == Some(at) {
                            sidecar.http.cut();
                        }
                        continue;
                    }
                    changed = deadline.changed() => if changed.is_err() { return },
                }
            }
            Some(_) => {
                if deadline.changed().await.is_err() {
                    return;
                }
            }
            None => {
                sidecar.http.uncut();
                if deadline.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
