//! The registry of open WebSocket connections, and the handle through which the drain
//! scheduler reaches each one.
//!
//! A relay task owns its sockets; everything else talks to it through a
//! [`ConnHandle`]: an atomic command word plus a waker, so telling 50,000 relays to
//! close costs no channel per connection and an idle relay stays a few bytes.
//!
//! Flow: the upgrade path (and TCP mode) registers a connection before contacting the
//! app; the drain seals the registry and takes its list in one critical section; the
//! drain, `/shed` and `--max-connection-age` send commands through the handles; the
//! relay reads them; dropping the [`Registration`] when the relay ends removes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

/// What the outside world asks of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Keep relaying.
    None,
    /// Send the client a close frame with the reconnect hint at the next boundary.
    Close,
    /// Drop both sockets now (drain deadline, or a forced shutdown).
    Abort,
}

/// Why a relay was asked to close: every close is counted once, under its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The drain's schedule.
    Drain,
    /// `POST /shed`.
    Shed,
    /// `--max-connection-age`.
    MaxAge,
}

/// The command word of a [`ConnHandle`]: one atomic byte, so 50,000 idle relays cost
/// no channel each. A close never replaces another close; an abort replaces anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Word {
    None = 0,
    CloseDrain = 1,
    CloseShed = 2,
    CloseMaxAge = 3,
    Abort = 4,
    /// A drain's close whose drain was cancelled afterwards: still a close for the
    /// relay, no longer any drain's to count.
    CloseDrainWithdrawn = 5,
}

impl Word {
    fn from_u8(v: u8) -> Word {
        match v {
            0 => Word::None,
            1 => Word::CloseDrain,
            2 => Word::CloseShed,
            3 => Word::CloseMaxAge,
            5 => Word::CloseDrainWithdrawn,
            _ => Word::Abort,
        }
    }

    fn close(reason: CloseReason) -> Word {
        match reason {
            CloseReason::Drain => Word::CloseDrain,
            CloseReason::Shed => Word::CloseShed,
            CloseReason::MaxAge => Word::CloseMaxAge,
        }
    }
}

/// The word and the reconnect hint packed in one atomic (`hint << 8 | word`), so the
/// hint is written only by the close that wins and is read together with its command.
fn pack(word: Word, hint_ms: u32) -> u64 {
    (u64::from(hint_ms) << 8) | word as u64
}

fn word_of(state: u64) -> Word {
    Word::from_u8((state & 0xff) as u8)
}

fn hint_of(state: u64) -> u32 {
    (state >> 8) as u32
}

/// The outside's grip on one relay.
#[derive(Debug)]
pub struct ConnHandle {
    /// Connection id, also in the connection's log span.
    pub id: u64,
    /// When the upgrade completed.
    pub opened: Instant,
    /// The command word and its hint ([`pack`]).
    state: AtomicU64,
    waker: AtomicWaker,
}

impl ConnHandle {
    /// Asks the relay to close gracefully with the reconnect hint `hint_ms`, for
    /// `reason`. Returns false when a close or an abort was asked for already (the
    /// first cause keeps the close, its hint and is the one counted).
    pub fn close(&self, reason: CloseReason, hint_ms: u32) -> bool {
        let asked = self
            .state
            .compare_exchange(
                pack(Word::None, 0),
                pack(Word::close(reason), hint_ms),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if asked {
            self.waker.wake();
        }
        asked
    }

    /// Asks the relay to drop its sockets now.
    pub fn abort(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(pack(Word::Abort, hint_of(s)))
            });
        self.waker.wake();
    }

    /// A cancelled drain's close stays a close, but is no longer that drain's (nor the
    /// next one's) to count.
    pub fn withdraw_drain_close(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (word_of(s) == Word::CloseDrain)
                    .then(|| pack(Word::CloseDrainWithdrawn, hint_of(s)))
            });
    }

    fn word(&self) -> Word {
        word_of(self.state.load(Ordering::Acquire))
    }

    /// The command given so far.
    pub fn command(&self) -> Command {
        match self.word() {
            Word::None => Command::None,
            Word::CloseDrain | Word::CloseShed | Word::CloseMaxAge | Word::CloseDrainWithdrawn => {
                Command::Close
            }
            Word::Abort => Command::Abort,
        }
    }

    /// Why the relay was asked to close, if it was (`None` also after an abort, and for
    /// a close whose drain was cancelled).
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.word() {
            Word::CloseDrain => Some(CloseReason::Drain),
            Word::CloseShed => Some(CloseReason::Shed),
            Word::CloseMaxAge => Some(CloseReason::MaxAge),
            Word::None | Word::Abort | Word::CloseDrainWithdrawn => None,
        }
    }

    /// The current command and hint; the relay registers its waker first.
    pub fn poll_command(&self, cx: &std::task::Context<'_>) -> (Command, u32) {
        self.waker.register(cx.waker());
        let state = self.state.load(Ordering::Acquire);
        let command = match word_of(state) {
            Word::None => Command::None,
            Word::Abort => Command::Abort,
            _ => Command::Close,
        };
        (command, hint_of(state))
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` are open.
    Full,
    /// The drain has taken its list of connections to close: a connection registered
    /// now would be in no schedule, so it is refused instead (503 before the upgrade).
    Sealed,
}

/// All open WebSocket connections of this process.
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<Registry>,
    next_id: AtomicU64,
    emptied: Notify,
}

/// The open connections and whether a drain has sealed the set.
#[derive(Debug, Default)]
struct Registry {
    open: HashMap<u64, Arc<ConnHandle>>,
    sealed: bool,
}

/// Removes its connection from the registry when dropped (the relay ended).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Connections>,
    /// The handle of this connection.
    pub handle: Arc<ConnHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let now_empty = {
            let mut map = self.registry.lock();
            map.open.remove(&self.handle.id);
            map.open.is_empty()
        };
        if now_empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Connections {
    /// A fresh connection id (also used for connections that never upgrade).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers connection `id` unless `max` are open or the drain has sealed the
    /// registry. Both checks happen under the registry's lock, so a connection is either
    /// refused or in the snapshot [`Connections::seal`] hands the drain; never neither.
    pub fn register(self: &Arc<Self>, id: u64, max: usize) -> Result<Registration, Refused> {
        let handle = Arc::new(ConnHandle {
            id,
            opened: Instant::now(),
            state: AtomicU64::new(pack(Word::None, 0)),
            waker: AtomicWaker::new(),
        });
        let mut map = self.lock();
        if map.sealed {
            return Err(Refused::Sealed);
        }
        if map.open.len() >= max {
            return Err(Refused::Full);
        }
        map.open.insert(id, handle.clone());
        Ok(Registration {
            registry: self.clone(),
            handle,
        })
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles of every open connection (rebalancing, the drain deadline).
    pub fn snapshot(&self) -> Vec<Arc<ConnHandle>> {
        self.lock().open.values().cloned().collect()
    }

    /// Seals the registry for a drain and returns the connections the drain is to
    /// close: every open one not already asked to close (those are closing for their own
    /// reason). From now on [`Connections::register`] refuses, in the same critical
    /// section, so no connection slips between the snapshot and the refusal.
    pub fn seal(&self) -> Vec<Arc<ConnHandle>> {
        let mut map = self.lock();
        map.sealed = true;
        map.open
            .values()
            .filter(|h| h.command() == Command::None)
            .cloned()
            .collect()
    }

    /// Lifts the seal (a cancelled drain): new connections are welcome again.
    pub fn unseal(&self) {
        self.lock().sealed = false;
    }

    /// True while a drain has the registry sealed.
    pub fn is_sealed(&self) -> bool {
        self.lock().sealed
    }

    /// Resolves once no connection is open.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_registry_refuses_and_the_seal_lists_every_connection_before_it() {
        let conns = Arc::new(Connections::default());
        let a = conns.register(1, 10).expect("open");
        let b = conns.register(2, 10).expect("open");
        assert!(b.handle.close(CloseReason::Shed, 5));
        let sealed = conns.seal();
        // The shed connection is closing for its own reason; the drain takes the rest.
        assert_eq!(sealed.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(conns.register(3, 10).err(), Some(Refused::Sealed));
        conns.unseal();
        assert!(conns.register(4, 10).is_ok());
        drop((a, b));
    }

    #[test]
    fn the_first_close_wins_and_an_abort_overrides() {
        let conns = Arc::new(Connections::default());
        let r = conns.register(1, 1).expect("open");
        assert_eq!(conns.register(2, 1).err(), Some(Refused::Full));
        assert!(r.handle.close(CloseReason::MaxAge, 1));
        assert!(!r.handle.close(CloseReason::Drain, 2));
        assert_eq!(r.handle.close_reason(), Some(CloseReason::MaxAge));
        assert_eq!(r.handle.command(), Command::Close);
        r.handle.abort();
        assert_eq!(r.handle.command(), Command::Abort);
        assert!(!r.handle.close(CloseReason::Drain, 2));
    }

    /// A refused close leaves the winner's reconnect hint alone: the client gets the
    /// hint of the close it really gets.
    #[test]
    fn a_refused_close_keeps_the_winners_hint() {
        let conns = Arc::new(Connections::default());
        let r = conns.register(1, 1).expect("open");
        let cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(r.handle.close(CloseReason::Shed, 1234));
        assert!(!r.handle.close(CloseReason::Drain, 99));
        assert_eq!(r.handle.poll_command(&cx), (Command::Close, 1234));
        r.handle.abort();
        assert!(!r.handle.close(CloseReason::MaxAge, 7));
        assert_eq!(r.handle.poll_command(&cx).0, Command::Abort);
    }
}
