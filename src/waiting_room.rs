//! A bounded set of connections waiting for their peer's first bytes (a PROXY header, a
//! request head, a TLS handshake), where a newcomer sheds the oldest when it is full.
//!
//! Why oldest first: a well-formed client sends what a stage waits for in its first
//! packet and leaves the room within a round trip, so the oldest seats are the
//! stalled ones. Refusing the newcomer instead (a plain semaphore) lets a few hundred
//! stalled sockets lock every real client out until their timeout; shedding the oldest
//! keeps the room's cost bounded and the door open for anyone who talks.
//!
//! Flow: a connection takes a [`Seat`] when it starts waiting, awaits its stage's bytes
//! raced against [`Seat::shed`], and drops the seat when the bytes are there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[cfg(test)]
mod tests;

/// Connections waiting in one stage, at most `cap` at once.
#[derive(Debug)]
pub struct WaitingRoom {
    cap: usize,
    /// Seats by age (ids only grow): the first entry is the oldest.
    seats: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next: AtomicU64,
}

/// One connection's place in a [`WaitingRoom`], given back on drop.
#[derive(Debug)]
pub struct Seat {
    room: &'static WaitingRoom,
    id: u64,
    shed: Arc<Notify>,
}

impl WaitingRoom {
    /// A room for at most `cap` waiting connections (at least one).
    pub const fn new(cap: usize) -> Self {
        WaitingRoom {
            cap: if cap == 0 { 1 } else { cap },
            seats: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// The bound this room was made with.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections waiting right now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a seat. When the room is full, the oldest seat's holder is told to leave
    /// (its [`Seat::shed`] completes) and its place is given to the newcomer.
    pub fn enter(&'static self) -> Seat {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let shed = Arc::new(Notify::new());
        let mut seats = self.lock();
        while seats.len() >= self.cap {
            match seats.pop_first() {
                // `notify_one` keeps a permit if the holder is not awaiting yet.
                Some((_, oldest)) => oldest.notify_one(),
                None => break,
            }
        }
        seats.insert(id, shed.clone());
        drop(seats);
        Seat {
            room: self,
            id,
            shed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        // A panic while holding the map cannot leave it inconsistent: every operation
        // on it is a single insert or remove.
        self.seats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Seat {
    /// Completes when a newcomer shed this seat: the connection is to be dropped.
    pub async fn shed(&self) {
        self.shed.notified().await;
    }

    /// Like [`Seat::shed`], as a future of its own, for a connection that gives its seat
    /// away (drops it) from somewhere else than where it waits. Once the seat is
    /// dropped the future never completes.
    pub fn on_shed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shed = self.shed.clone();
        async move { shed.notified().await }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.lock().remove(&self.id);
    }
}
