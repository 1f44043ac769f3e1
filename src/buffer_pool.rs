//! Read buffers borrowed only while bytes are moving.
//!
//! An idle WebSocket connection holds no buffer at all: the relay waits for readiness,
//! borrows a buffer, reads, forwards, and gives the buffer back as soon as everything
//! read has been written. Memory per idle connection is a headline number; this is
//! what keeps it small. A per-thread free list keeps the allocator out of the hot path.

use std::cell::RefCell;

/// Size of one relay read buffer.
pub const BUF_SIZE: usize = 16 * 1024;
/// Free buffers kept per worker thread.
const KEEP_PER_THREAD: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Takes a buffer of [`BUF_SIZE`] bytes from this thread's free list, or allocates one.
pub fn take() -> Box<[u8]> {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

/// Gives a buffer back; buffers of another size (early bytes of a handshake) are freed.
pub fn give(buf: Box<[u8]>) {
    if buf.len() != BUF_SIZE {
        return;
    }
    FREE.with(|f| {
        let mut free = f.borrow_mut();
        if free.len() < KEEP_PER_THREAD {
            free.push(buf);
        }
    });
}
