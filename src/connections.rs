//! The registry of open WebSocket connections, and the handle through which the drain
//! scheduler reaches each one.
//!
//! A relay task owns its sockets; everything else talks to it through a
//! [`ConnHandle`]: an atomic command word plus a waker, so telling 50,000 relays to
//! close costs no channel per connection and an idle relay stays a few bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
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

/// The outside's grip on one relay.
#[derive(Debug)]
pub struct ConnHandle {
    /// Connection id, also in the connection's log span.
    pub id: u64,
    /// When the upgrade completed.
    pub opened: Instant,
    command: AtomicU8,
    hint_ms: AtomicU32,
    waker: AtomicWaker,
}

impl ConnHandle {
    /// Asks the relay to close gracefully with the reconnect hint `hint_ms`.
    /// A later or stronger command wins; a close never downgrades an abort.
    pub fn close(&self, hint_ms: u32) {
        self.hint_ms.store(hint_ms, Ordering::Relaxed);
        let _ = self
            .command
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    /// Asks the relay to drop its sockets now.
    pub fn abort(&self) {
        self.command.store(2, Ordering::Release);
        self.waker.wake();
    }

    /// The command given so far.
    pub fn command(&self) -> Command {
        match self.command.load(Ordering::Acquire) {
            0 => Command::None,
            1 => Command::Close,
            _ => Command::Abort,
        }
    }

    /// The current command and hint; the relay registers its waker first.
    pub fn poll_command(&self, cx: &std::task::Context<'_>) -> (Command, u32) {
        self.waker.register(cx.waker());
        (self.command(), self.hint_ms.load(Ordering::Relaxed))
    }
}

/// All open WebSocket connections of this process.
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    next_id: AtomicU64,
    emptied: Notify,
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
            map.remove(&self.handle.id);
            map.is_empty()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnHandle>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers connection `id` if fewer than `max` are open.
    pub fn register(self: &Arc<Self>, id: u64, max: usize) -> Option<Registration> {
        let handle = Arc::new(ConnHandle {
            id,
            opened: Instant::now(),
            command: AtomicU8::new(0),
            hint_ms: AtomicU32::new(0),
            waker: AtomicWaker::new(),
        });
        let mut map = self.lock();
        if map.len() >= max {
            return None;
        }
        map.insert(id, handle.clone());
        Some(Registration {
            registry: self.clone(),
            handle,
        })
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles of every open connection, for the drain scheduler.
    pub fn snapshot(&self) -> Vec<Arc<ConnHandle>> {
        self.lock().values().cloned().collect()
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
