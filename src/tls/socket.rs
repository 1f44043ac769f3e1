//! A client's socket as the relay gets it: plaintext TCP or TLS, one type.
//!
//! The relay is generic over its [`Transport`], but it is instantiated once, with this
//! enum on both sides (the app side is always `Plain`). Two instantiations (plaintext
//! and TLS) duplicated the relay's hot path, gave every helper and every tokio call on
//! it several callers, and LLVM stopped inlining them: 4 to 11 % more instructions per
//! plaintext round trip (callgrind). One instantiation keeps plaintext's code what it
//! was before TLS existed, for the price of one predictable branch per socket call;
//! the TLS arm is kept out of line so it does not weigh on that code either.

use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use super::TlsTransport;
use crate::relay::Transport;

/// One side of a relayed connection.
pub enum Socket {
    /// Plaintext TCP (always the app's side).
    Plain(TcpStream),
    /// A client after its TLS handshake (boxed: a rustls session is large).
    Tls(Box<TlsTransport>),
}

impl Transport for Socket {
    #[inline(always)]
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Plain(s) => s.poll_read_ready(cx),
            Socket::Tls(t) => t.poll_read_ready(cx),
        }
    }

    #[inline(always)]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => Transport::try_read(s, buf),
            Socket::Tls(t) => t.try_read(buf),
        }
    }

    #[inline(always)]
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Socket::Plain(s) => Transport::poll_write(s, cx, bytes),
            Socket::Tls(t) => t.poll_write(cx, bytes),
        }
    }

    #[inline(always)]
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Plain(s) => Transport::poll_flush(s, cx),
            Socket::Tls(t) => t.poll_flush(cx),
        }
    }

    #[inline(always)]
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Plain(s) => Transport::poll_shutdown(s, cx),
            Socket::Tls(t) => t.poll_shutdown(cx),
        }
    }
}
