//! A TLS connection as the relay sees it: a [`Transport`] over a TCP socket and a
//! rustls server session, so the relay's choreography runs unchanged over `wss://`.
//!
//! Reads: readiness is the socket's unless rustls already holds decrypted bytes; a read
//! hands out plaintext, pulling and decrypting records from the socket when rustls has
//! none. Writes: the bytes are encrypted into rustls' send buffer and put on the wire at
//! once; while encrypted bytes of an earlier write still wait, nothing new is taken,
//! so a slow client pushes back exactly as over plaintext. The end of the write side
//! is `close_notify`, then the FIN.
//!
//! Flow: a finished handshake ([`crate::tls::accept`]) in; the relay drives it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::task::{Context, Poll, ready};

use rustls::ServerConnection;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::relay::Transport;

/// A client connection after its TLS handshake.
pub struct TlsTransport {
    tcp: TcpStream,
    session: ServerConnection,
    /// `close_notify` is queued: the write side is ending.
    closing: bool,
}

impl TlsTransport {
    /// Wraps a socket and the session whose handshake ran over it.
    pub fn new(tcp: TcpStream, session: ServerConnection) -> Self {
        TlsTransport {
            tcp,
            session,
            closing: false,
        }
    }

    /// Moves records from the socket into rustls and decrypts them. `Ok(0)` at EOF.
    fn pull_records(&mut self) -> io::Result<usize> {
        let (tcp, session) = (&self.tcp, &mut self.session);
        let n = tcp.try_io(Interest::READABLE, || {
            let sock = SockRef::from(tcp);
            session.read_tls(&mut &*sock)
        })?;
        if let Err(e) = self.session.process_new_packets() {
            // rustls has queued an alert saying why; it goes out if the socket takes it.
            let _ = self.push_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }

    /// Writes encrypted records until rustls holds none or the socket is full.
    fn push_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            let (tcp, session) = (&self.tcp, &mut self.session);
            let n = tcp.try_io(Interest::WRITABLE, || {
                let sock = SockRef::from(tcp);
                session.write_tls(&mut &*sock)
            })?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

// Out of line: these are called from the relay's one instantiation, whose plaintext
// code must not grow for them (see `socket.rs`).
impl Transport for TlsTransport {
    #[inline(never)]
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.session.wants_read() {
            // Plaintext waits in rustls, or the peer's close_notify came: either way a
            // read makes progress without the socket.
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    #[inline(never)]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // rustls has no plaintext: pull records (WouldBlock when the socket is dry).
            // At EOF without close_notify the reader reports UnexpectedEof next round.
            self.pull_records()?;
            if self.session.wants_write() {
                // A key update or similar wants an answer; the socket usually takes it.
                match self.push_records() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
        }
    }

    #[inline(never)]
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(cx))?;
        let n = self.session.writer().write(bytes)?;
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    #[inline(never)]
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.push_records() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?
                }
                done => return Poll::Ready(done),
            }
        }
    }

    #[inline(never)]
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !std::mem::replace(&mut self.closing, true) {
            self.session.send_close_notify();
        }
        ready!(self.poll_flush(cx))?;
        Poll::Ready(SockRef::from(&self.tcp).shutdown(Shutdown::Write))
    }
}
