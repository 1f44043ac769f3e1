//! The boundary between the relay and the socket it reads and writes: readiness-style,
//! so that plaintext TCP keeps its write-first, copy-free path and TLS fits the same
//! shape.
//!
//! The pump waits for read readiness *before* it borrows a buffer (an idle connection
//! holds none), reads what is there without waiting, and tries a write before it waits
//! for write readiness. A [`Transport`] offers exactly those steps. For [`TcpStream`]
//! they are the tokio calls the pump made before this boundary existed, inlined through
//! the generic pump, so plaintext costs what it cost. A TLS transport does the same
//! steps on decrypted bytes, and has two extra duties the pump calls at the right time:
//! [`Transport::poll_flush`] (records that are encrypted but not yet on the wire) and
//! [`Transport::poll_shutdown`] (`close_notify`, then the FIN).

use std::io::{self, Read};
use std::net::Shutdown;
use std::task::{Context, Poll, ready};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One side of a relayed connection, as the pump drives it.
pub trait Transport {
    /// Ready when a [`Transport::try_read`] may make progress (bytes, EOF or an error).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is available now: `Ok(0)` is the end of the stream, `WouldBlock` means
    /// nothing yet (and the next [`Transport::poll_read_ready`] waits for more).
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes what the transport takes now; waits only when it takes nothing.
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>>;

    /// Puts on the wire what the transport still holds of earlier writes.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the write side: a FIN, after whatever the protocol sends at its end.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    #[inline]
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    #[inline]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_once(self, buf)
    }

    #[inline]
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        write_some(cx, self, bytes)
    }

    #[inline]
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is held above the kernel's buffer
    }

    #[inline]
    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(SockRef::from(&*self).shutdown(Shutdown::Write))
    }
}

/// Reads what the socket holds, like `try_read`, except that a short read also clears
/// tokio's readiness, as `AsyncRead::poll_read` does: the socket is drained, so the next
/// read waits for epoll instead of costing a `recvfrom` that fails with EAGAIN (a third
/// of the relay's syscalls on small messages before this).
pub(crate) fn read_once(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let mut got = 0;
    let result = src.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(src)).read(buf)?;
        got = n;
        if n > 0 && n < len {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Writes what the socket takes now. The write is tried first and readiness is waited
/// for only when the socket is full: `try_write` checks tokio's readiness itself, so
/// polling for writability before every write paid that check twice, with the
/// cooperative budget's bookkeeping on top (5 % of wsdrain's user-space instructions
/// per 64 B round trip; docs/performance.md, "Round three"). A write that does not block
/// spends no budget; the reads still do, which is what makes a busy relay yield.
pub(crate) fn write_some(
    cx: &mut Context<'_>,
    dst: &TcpStream,
    bytes: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        match dst.try_write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(dst.poll_write_ready(cx))?,
            done => return Poll::Ready(done),
        }
    }
}
