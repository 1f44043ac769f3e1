//! A TLS connection as the relay and hyper see it: a [`Transport`] (and tokio's
//! `AsyncRead`/`AsyncWrite`) over a TCP socket and a rustls session, so the relay's
//! choreography runs unchanged over `wss://`.
//!
//! Why rustls' *unbuffered* API: the buffered `ServerConnection` keeps a 4 KiB read
//! buffer for the whole life of a connection, and an idle `wss://` socket cost 7 KiB more
//! than an idle `ws://` one. Here the caller owns the buffers, and this transport holds
//! bytes only while they move: received records wait in `incoming` until they are
//! decrypted, decrypted bytes wait in `plain` until the reader takes them, encrypted
//! records wait in `outgoing` until the socket takes them, and each is freed as soon
//! as it empties. An idle connection holds the session's state and nothing else.
//!
//! Reads: readiness is the socket's unless decrypted bytes (or the end) already wait.
//! Writes: bytes are encrypted and put on the wire at once; while encrypted bytes of
//! an earlier write still wait, nothing new is taken, so a slow client pushes back
//! exactly as over plaintext. The end of the write side is `close_notify`, then the FIN.
//!
//! Flow: a client's socket in ([`crate::tls::Tls::accept`] runs [`TlsTransport::handshake`]);
//! hyper serves the HTTP exchange over it, and the relay drives it after an upgrade.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::relay::Transport;

/// The largest TLS record on the wire: 16 KiB of payload plus header, tag and padding.
const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;

/// Plaintext taken by one write at most (four full records).
const MAX_WRITE: usize = 64 * 1024;

/// A client connection with its TLS session.
pub struct TlsTransport {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes not yet processed: at most the start of one record between
    /// calls, and no allocation at all when empty.
    incoming: Vec<u8>,
    /// Encrypted bytes for the socket; the first `sent` of them are on the wire.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes the reader has not taken; the first `taken` of them it has.
    plain: Vec<u8>,
    taken: usize,
    /// The peer's `close_notify` came: reads end cleanly once `plain` is taken.
    peer_closed: bool,
    /// The socket's read side ended (without `close_notify`, an unexpected end).
    eof: bool,
    /// `close_notify` is queued: the write side is ending.
    closing: bool,
}

impl TlsTransport {
    /// Runs the server side of a handshake over `tcp`. A peer that leaves before it
    /// finishes gives `UnexpectedEof`; a protocol failure gives `InvalidData` (after
    /// rustls' alert saying why, if the socket takes it).
    pub async fn handshake(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
        let mut t = TlsTransport {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            peer_closed: false,
            eof: false,
            closing: false,
        };
        loop {
            let processed = t.process(&[], false);
            std::future::poll_fn(|cx| t.poll_flush(cx)).await?;
            processed?;
            if !t.conn.is_handshaking() {
                return Ok(t);
            }
            if t.eof || t.peer_closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            t.tcp.readable().await?;
            match t.pull_records() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
    }

    /// Reads what the socket holds into `incoming`. `Ok(0)` at EOF; `WouldBlock` (and
    /// tokio's readiness cleared) when it holds nothing.
    fn pull_records(&mut self) -> io::Result<usize> {
        let used = self.incoming.len();
        if self.incoming.capacity() - used < MAX_RECORD {
            self.incoming.reserve_exact(MAX_RECORD);
        }
        self.incoming.resize(used + MAX_RECORD, 0);
        let (tcp, spare) = (&self.tcp, &mut self.incoming[used..]);
        let result = tcp.try_io(Interest::READABLE, || (&*SockRef::from(tcp)).read(spare));
        let n = *result.as_ref().unwrap_or(&0);
        self.incoming.truncate(used + n);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if n == 0 && result.is_ok() {
            self.eof = true;
        }
        result
    }

    /// Lets rustls work through what has arrived and what is to be sent: records are
    /// decrypted into `plain`, handshake and alert records encoded into `outgoing`, up
    /// to `data.len()` bytes of `data` encrypted (the count is returned), and
    /// `close_notify` queued if `close`. Stops where rustls needs more input or has
    /// nothing left to do; `incoming` then holds at most a partial record.
    fn process(&mut self, mut data: &[u8], close: bool) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let again = match state {
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                    true
                }
                Ok(ConnectionState::EncodeTlsData(mut encoder)) => {
                    encode(&mut self.outgoing, |buf| match encoder.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(Some(s)),
                        Err(EncodeError::AlreadyEncoded) => Err(None),
                    })?;
                    true
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The bytes wait in `outgoing`; `poll_flush` puts them on the wire.
                    transmit.done();
                    true
                }
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    if !data.is_empty() {
                        let chunk = &data[..data.len().min(MAX_WRITE)];
                        encode(&mut self.outgoing, |buf| match writer.encrypt(chunk, buf) {
                            Ok(n) => Ok(n),
                            Err(EncryptError::InsufficientSize(s)) => Err(Some(s)),
                            Err(_) => Err(None),
                        })?;
                        taken = chunk.len();
                        data = &[];
                    }
                    if close && !self.closing {
                        self.closing = true;
                        encode(&mut self.outgoing, |buf| {
                            writer.queue_close_notify(buf).map_err(|e| match e {
                                EncryptError::InsufficientSize(s) => Some(s),
                                _ => None,
                            })
                        })?;
                    }
                    false
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    true
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    false
                }
                // More input is needed to go on with the handshake.
                Ok(ConnectionState::BlockedHandshake) => false,
                // Early data is never enabled, so it cannot come; anything else is a
                // state this version of wsdrain does not know how to drive.
                Ok(other) => {
                    return Err(invalid_data(format!("unexpected TLS state {other:?}")));
                }
                Err(e) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    self.queue_alert();
                    return Err(invalid_data(e));
                }
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if !again {
                break;
            }
        }
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        Ok(taken)
    }

    /// After an error, encodes the alert rustls queued for it (the next call yields it
    /// before it reports the error again). The call gets the same received bytes: rustls
    /// keeps the start of a handshake message that spans records in them, by position,
    /// and an empty buffer there made it index past the end (found by the `tls_accept`
    /// fuzz target).
    fn queue_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encoder)) = state {
            let _ = encode(&mut self.outgoing, |buf| {
                encoder.encode(buf).map_err(|e| match e {
                    EncodeError::InsufficientSize(s) => Some(s),
                    EncodeError::AlreadyEncoded => None,
                })
            });
        }
    }

    /// Writes encrypted records until none wait or the socket is full (`WouldBlock`).
    fn push_records(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            let (tcp, pending) = (&self.tcp, &self.outgoing[self.sent..]);
            let n = tcp.try_io(Interest::WRITABLE, || (&*SockRef::from(tcp)).write(pending))?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Hands out decrypted bytes; `None` when none wait.
    fn take_plain(&mut self, buf: &mut [u8]) -> Option<usize> {
        let waiting = &self.plain[self.taken..];
        if waiting.is_empty() {
            return None;
        }
        let n = waiting.len().min(buf.len());
        buf[..n].copy_from_slice(&waiting[..n]);
        self.taken += n;
        if self.taken == self.plain.len() {
            self.plain = Vec::new();
            self.taken = 0;
        }
        Some(n)
    }
}

/// Runs one of rustls' encoders into the end of `out`, growing it to the size rustls
/// asks for. The closure gives rustls' own error: `Some` (too small, with the size it
/// needs) or `None` (it cannot encode at all).
fn encode(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) -> io::Result<()> {
    let used = out.len();
    let mut room = 256;
    loop {
        out.resize(used + room, 0);
        match f(&mut out[used..]) {
            Ok(n) => {
                out.truncate(used + n);
                return Ok(());
            }
            Err(Some(InsufficientSizeError { required_size })) if required_size > room => {
                room = required_size;
            }
            Err(_) => {
                out.truncate(used);
                return Err(invalid_data("TLS record could not be encoded"));
            }
        }
    }
}

fn invalid_data<E>(e: E) -> io::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// Out of line: these are called from the relay's one instantiation, whose plaintext
// code must not grow for them (see `socket.rs`).
impl Transport for TlsTransport {
    #[inline(never)]
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.taken < self.plain.len() || self.peer_closed || self.eof {
            // A read makes progress without the socket.
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    #[inline(never)]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.take_plain(buf) {
                return Ok(n);
            }
            if self.peer_closed || buf.is_empty() {
                return Ok(0);
            }
            if self.eof {
                // The TCP stream ended without close_notify: a truncation, not an end.
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.pull_records()?; // WouldBlock when the socket is dry
            let processed = self.process(&[], false);
            // Whatever rustls answered (a key update, an alert) goes out if it can.
            match self.push_records() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            processed?;
        }
    }

    #[inline(never)]
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(cx))?;
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = self.process(bytes, false)?;
        if n == 0 {
            // The session takes no more application data (it is closed).
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
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
        if !self.closing {
            self.process(&[], true)?;
        }
        ready!(self.poll_flush(cx))?;
        Poll::Ready(SockRef::from(&self.tcp).shutdown(Shutdown::Write))
    }
}

/// hyper serves the HTTP exchange over the same transport (through `TokioIo`).
impl AsyncRead for TlsTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(Transport::poll_read_ready(this, cx))?;
            match Transport::try_read(this, buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The socket was dry: its readiness is cleared, the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Transport::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Transport::poll_flush(self.get_mut(), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Transport::poll_shutdown(self.get_mut(), cx)
    }
}
