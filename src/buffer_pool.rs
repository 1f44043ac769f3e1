//! Read buffers borrowed only while bytes are moving.
//!
//! An idle WebSocket connection holds no buffer at all: the relay waits for readiness,
//! borrows a buffer, reads, forwards, and gives the buffer back as soon as everything
//! read has been written. Memory per idle connection is a headline number; this is
//! what keeps it small. A per-thread free list keeps the allocator out of the hot path.
//!
//! Every borrowed buffer is a [`Buf`], counted (in per-thread parts) while it lives,
//! so `wsdrain_relay_buffers_in_use` can show that idle connections really hold none
//! (a leak or a pinned buffer shows up as a count that does not go back to 0).
//!
//! Flow: the relay's pumps take a [`Buf`] when a socket is readable and give it back
//! when everything read is written; the metrics read the count.

use crate::per_thread_counter::Slots;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of one relay read buffer.
pub const BUF_SIZE: usize = 16 * 1024;
/// Free buffers kept per worker thread.
const KEEP_PER_THREAD: usize = 64;

/// Buffers borrowed right now, summed across threads (per-thread parts: a take and a
/// give per message must not move a shared cache line between cores).
static IN_USE: Slots = Slots::new();

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A borrowed read buffer. Dropping it gives it back (to this thread's free list when it
/// has the pool's size), whichever way its owner ends, so the count cannot drift.
#[derive(Debug)]
pub struct Buf(Box<[u8]>);

impl Buf {
    fn counted(bytes: Box<[u8]>) -> Buf {
        IN_USE.add(1);
        Buf(bytes)
    }

    /// Doubles the buffer, keeping its contents (a safety net; still one buffer).
    pub fn grow(&mut self) {
        let mut bigger = vec![0u8; self.0.len().max(1) * 2].into_boxed_slice();
        bigger[..self.0.len()].copy_from_slice(&self.0);
        self.0 = bigger;
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        IN_USE.add(-1);
        let bytes = std::mem::take(&mut self.0);
        if bytes.len() != BUF_SIZE {
            return;
        }
        // The free list may already be gone while the thread exits: then just free.
        let _ = FREE.try_with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < KEEP_PER_THREAD {
                free.push(bytes);
            }
        });
    }
}

/// Takes a buffer of [`BUF_SIZE`] bytes from this thread's free list, or allocates one.
pub fn take() -> Buf {
    let bytes = FREE
        .with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
    Buf::counted(bytes)
}

/// A buffer of at least `len` bytes: a pooled one when it fits in half of one (so a
/// read still has room), else a one-off allocation freed when dropped.
pub fn take_at_least(len: usize) -> Buf {
    if len <= BUF_SIZE / 2 {
        take()
    } else {
        Buf::counted(vec![0u8; len + BUF_SIZE].into_boxed_slice())
    }
}

/// Gives a buffer back (the same as dropping it; named for the reader).
pub fn give(buf: Buf) {
    drop(buf);
}

/// Buffers currently borrowed by relays, summed across threads.
pub fn in_use() -> i64 {
    IN_USE.get()
}
