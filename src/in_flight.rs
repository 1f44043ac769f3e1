//! Plain HTTP responses in flight, so a drain waits for them instead of cutting them.
//!
//! A WebSocket is in the connection registry; a forwarded request is not, yet cutting
//! it loses data just the same (a download, a token stream, a long-poll). Every
//! forwarded request holds an [`InFlightGuard`] from its arrival until its response
//! body has been written out or abandoned. The process exits only once none is left
//! (or the drain's deadline has passed), and at that deadline every response still
//! going is told to stop through [`InFlight::cut`].
//!
//! Flow: the HTTP front end takes a guard per request and watches [`InFlight::cut_signal`]
//! while it streams; the deadline task there calls [`InFlight::cut`]; the exit logic waits
//! on [`InFlight::wait_idle`], then [`InFlight::stop_serving`] so client connections
//! take no new request, then waits once more for the requests that came meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{Notify, watch};

/// How long no plain HTTP request may be in flight before the drain counts the HTTP
/// side as over (the process exits, `/prestop` answers): a polling client is back well
/// within it.
pub const QUIET: Duration = Duration::from_millis(500);

/// The count of responses in flight, and the cut signal they watch.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    /// Requests ever entered: tells a quiet spell from a busy one that came back to 0.
    entered: AtomicU64,
    idle: Notify,
    cut: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    gauge: IntGauge,
}

/// One request in flight, from its arrival until its response is over; dropping it
/// takes the request off the count.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.gauge.dec();
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// An empty count that mirrors itself into `gauge`
    /// (`wsdrain_http_requests_in_flight`).
    pub fn new(gauge: IntGauge) -> Arc<Self> {
        Arc::new(InFlight {
            count: AtomicUsize::new(0),
            entered: AtomicU64::new(0),
            idle: Notify::new(),
            cut: watch::channel(false).0,
            stop: watch::channel(false).0,
            gauge,
        })
    }

    /// Counts one more request in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.entered.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        InFlightGuard(self.clone())
    }

    /// Requests in flight now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when no request is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once no request has been in flight for `quiet`. Clients that poll
    /// (Socket.IO, SignalR long-polling) bring the count to 0 for an instant between
    /// an answer and their next request; a process exiting then would cut that request.
    pub async fn wait_quiet(&self, quiet: Duration) {
        loop {
            self.wait_idle().await;
            let entered = self.entered.load(Ordering::Acquire);
            tokio::time::sleep(quiet).await;
            if self.is_empty() && self.entered.load(Ordering::Acquire) == entered {
                return;
            }
        }
    }

    /// The drain's deadline has passed: every response still going stops now.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// A cancelled drain: responses from now on run to their end again.
    pub fn uncut(&self) {
        self.cut.send_replace(false);
    }

    /// The process is about to exit: client connections take no new request (each
    /// finishes the answer it is writing, then closes).
    pub fn stop_serving(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once [`InFlight::stop_serving`] was called.
    pub async fn stopped(&self) {
        let _ = self.stop.subscribe().wait_for(|s| *s).await;
    }

    /// What a streaming response watches for [`InFlight::cut`].
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_count_follows_the_guards_and_idle_resolves_at_zero() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let f = InFlight::new(gauge.clone());
        let a = f.enter();
        let b = f.enter();
        assert_eq!((f.len(), gauge.get()), (2, 2));
        let waiting = tokio::spawn({
            let f = f.clone();
            async move { f.wait_idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("idle once the last guard is gone")
            .expect("task");
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_request_during_the_quiet_spell_starts_it_over() {
        let f = InFlight::new(IntGauge::new("g", "g").expect("gauge"));
        let quiet = Duration::from_millis(100);
        let waiting = tokio::spawn({
            let f = f.clone();
            async move { f.wait_quiet(quiet).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(f.enter());
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert!(
            !waiting.is_finished(),
            "a request came 50 ms into the spell"
        );
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("quiet in the end")
            .expect("task");
    }

    #[tokio::test]
    async fn the_cut_signal_reaches_every_watcher() {
        let f = InFlight::new(IntGauge::new("g", "g").expect("gauge"));
        let mut rx = f.cut_signal();
        assert!(!*rx.borrow());
        f.cut();
        rx.wait_for(|c| *c).await.expect("cut");
        f.uncut();
        assert!(!*f.cut_signal().borrow());
    }
}
