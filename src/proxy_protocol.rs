//! The PROXY protocol (HAProxy's spec, versions 1 and 2): keeping the client's address
//! across a hop that terminates TCP.
//!
//! Two uses: `--proxy-protocol v1|v2` writes a header to the app on each upstream
//! connection (WebSocket and TCP mode; plain HTTP requests travel over pooled
//! connections shared by many clients and carry `X-Forwarded-For` instead), and
//! `--accept-proxy-protocol` reads one from a load balancer in front (AWS NLB, HAProxy).
//! Reading never consumes a byte past the header, so what follows is untouched, and a
//! client that stops inside its header costs no CPU while it waits (bytes are peeked,
//! then consumed, so the wait is a real readiness wait). Connections inside their
//! header are bounded ([`MAX_PENDING_HEADERS`]).
//!
//! Version 2 families follow the spec: TCP/UDP over IPv4 and IPv6 carry the client's
//! address; UNSPEC (family or transport) and AF_UNIX get LOCAL semantics (the socket's
//! own peer is used); values the spec does not define are rejected, as it requires.
//! TLVs are skipped, up to an address block of `V2_MAX_LEN` bytes.
//!
//! Flow: a fresh client socket in (`connection.rs`): its header is read and the reported
//! address goes out; addresses in, a header's bytes out for the app connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::waiting_room::WaitingRoom;

#[cfg(test)]
mod tests;

/// The version 2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
/// A v2 header's address block (addresses plus TLVs) is at most this long. Cloud
/// balancers send far less: AWS NLB's `PP2_TYPE_AWS` VPC endpoint id and GCP's Private
/// Service Connect id are tens of bytes; HAProxy's SSL TLVs a few hundred. The bound
/// keeps what one waiting connection can make us hold small.
const V2_MAX_LEN: usize = 4096;

/// Most connections that may be inside their PROXY header at once. Each holds a
/// descriptor, a task and up to `V2_MAX_LEN` bytes; without a bound, clients that
/// send `PROXY ` and wait would pile up until `--handshake-timeout`. When it is reached
/// the oldest waiting connection is shed, so a balancer's header (which comes in the
/// first packet) still gets through.
pub const MAX_PENDING_HEADERS: usize = 512;

/// The connections inside their header right now.
static PENDING: WaitingRoom = WaitingRoom::new(MAX_PENDING_HEADERS);

/// Which header to send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// Text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// Binary header.
    V2,
}

/// Why a PROXY header from a client was rejected.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection did not start with a PROXY header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// The header broke the spec.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The header did not arrive in time.
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
    /// The socket failed while reading it.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    /// Shed to make room: [`MAX_PENDING_HEADERS`] newer connections were waiting too.
    #[error(
        "shed while waiting for its PROXY header: {MAX_PENDING_HEADERS} newer connections needed the places"
    )]
    Shed,
}

/// Encodes a header saying the connection came from `src` to `dst`.
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    match version {
        Version::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&V2_SIG);
            out.push(0x21); // version 2, PROXY command
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family (v4-mapped v6 when they differ), as the v1 text needs.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (
            SocketAddr::new(IpAddr::V6(to_v6(src.ip())), src.port()),
            SocketAddr::new(IpAddr::V6(to_v6(dst.ip())), dst.port()),
        )
    }
}

/// Reads a v1 or v2 header from the start of `stream`, within `within`. Returns the
/// client address it carries, or `None` for `LOCAL`/`UNKNOWN` (health checks from the
/// balancer itself: use the socket's peer).
///
/// At most [`MAX_PENDING_HEADERS`] connections wait inside this function at once; past
/// that the oldest waiting one gets [`HeaderError::Shed`] (a balancer sends its header
/// in the first packet, so only a slow or hostile client is ever caught waiting here).
pub async fn read_header(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let seat = PENDING.enter();
    tokio::select! {
        biased;
        read = tokio::time::timeout(within, read_header_inner(stream)) => {
            read.map_err(|_| HeaderError::Timeout)?
        }
        () = seat.shed() => Err(HeaderError::Shed),
    }
}

/// Reads exactly the header, never a byte past it. Bytes are peeked, and whatever part
/// of them is certainly header is then read (consumed): the next peek finds an empty
/// socket and really waits for readiness, so a client that stops halfway through costs
/// no CPU while it waits (a peek alone never clears readiness, and waiting on
/// `readable()` after it returns at once, for ever).
async fn read_header_inner(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    // Header bytes read so far: all of them belong to the header.
    let mut got: Vec<u8> = Vec::with_capacity(V1_MAX);
    let mut peek = [0u8; V1_MAX];
    loop {
        // `got` stays shorter than V1_MAX here: `header_len` decides (length known or
        // an error) before that, for both versions.
        let room = V1_MAX - got.len();
        let n = stream.peek(&mut peek[..room]).await?;
        if n == 0 {
            return Err(if got.is_empty() {
                HeaderError::Missing
            } else {
                HeaderError::Malformed("the connection ended inside the header")
            });
        }
        let start = got.len();
        got.extend_from_slice(&peek[..n]);
        match header_len(&got)? {
            Some(len) => {
                // Keep what was there before this peek and read the rest for real.
                got.truncate(start);
                got.resize(len, 0);
                stream.read_exact(&mut got[start..]).await?;
                return parse(&got);
            }
            None => {
                // Every peeked byte is header: consume them, so the next peek waits.
                stream.read_exact(&mut got[start..]).await?;
            }
        }
    }
}

/// The total header length once enough bytes are there to know it.
fn header_len(seen: &[u8]) -> Result<Option<usize>, HeaderError> {
    let sig_part = seen.len().min(12);
    if seen[..sig_part] == V2_SIG[..sig_part] {
        if seen.len() > 12 && seen[12] >> 4 != 2 {
            return Err(HeaderError::Malformed("v2 version is not 2"));
        }
        if seen.len() < 16 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([seen[14], seen[15]]));
        if len > V2_MAX_LEN {
            return Err(HeaderError::Malformed("v2 address block too long"));
        }
        return Ok(Some(16 + len));
    }
    let v1_part = seen.len().min(6);
    if seen[..v1_part] == b"PROXY "[..v1_part] {
        return match seen.windows(2).position(|w| w == b"\r\n") {
            Some(i) => Ok(Some(i + 2)),
            None if seen.len() >= V1_MAX => Err(HeaderError::Malformed(
                "v1 header has no CRLF within 107 bytes",
            )),
            None => Ok(None),
        };
    }
    Err(HeaderError::Missing)
}

/// Parses one complete header.
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    if header.starts_with(&V2_SIG) {
        parse_v2(header)
    } else if header.starts_with(b"PROXY ") {
        parse_v1(header)
    } else {
        Err(HeaderError::Missing)
    }
}

fn parse_v1(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let text = std::str::from_utf8(header)
        .map_err(|_| HeaderError::Malformed("v1 header is not ASCII"))?
        .strip_suffix("\r\n")
        .ok_or(HeaderError::Malformed("v1 header does not end in CRLF"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 source address"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 destination address"))?;
            if src.is_ipv4() != (*family == "TCP4") || dst.is_ipv4() != (*family == "TCP4") {
                return Err(HeaderError::Malformed(
                    "v1 address does not match its family",
                ));
            }
            let port = |p: &str| -> Result<u16, HeaderError> {
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                    return Err(HeaderError::Malformed("v1 port"));
                }
                p.parse().map_err(|_| HeaderError::Malformed("v1 port"))
            };
            let sport = port(sport)?;
            port(dport)?;
            Ok(Some(SocketAddr::new(src, sport)))
        }
        _ => Err(HeaderError::Malformed("v1 header has the wrong fields")),
    }
}

fn parse_v2(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    if header.len() < 16 {
        return Err(HeaderError::Malformed("v2 header shorter than 16 bytes"));
    }
    let ver_cmd = header[12];
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Malformed("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > V2_MAX_LEN {
        return Err(HeaderError::Malformed("v2 address block too long"));
    }
    if header.len() != 16 + len {
        return Err(HeaderError::Malformed(
            "v2 header length differs from its declared length",
        ));
    }
    let body = &header[16..];
    match ver_cmd & 0x0f {
        // LOCAL: "the receiver must accept this connection as valid and must use the
        // real connection endpoints and discard the protocol block including the
        // family which is ignored".
        0 => return Ok(None),
        1 => {}
        _ => {
            return Err(HeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ));
        }
    }
    let (family, transport) = (header[13] >> 4, header[13] & 0x0f);
    if family > 3 || transport > 2 {
        // "other values are unspecified and must not be emitted in version 2 of this
        // protocol and must be rejected as invalid by receivers".
        return Err(HeaderError::Malformed(
            "v2 address family or transport not defined by the spec",
        ));
    }
    match (family, transport) {
        // UNSPEC family or transport ("the receiver is free to accept the connection
        // anyway and use the real endpoint addresses"), and AF_UNIX, which no TCP peer
        // can have: LOCAL semantics, the socket's own peer.
        (0, _) | (_, 0) | (3, _) => Ok(None),
        (1, _) if body.len() >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            )))
        }
        (2, _) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = std::net::Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            )))
        }
        _ => Err(HeaderError::Malformed("v2 address block too short")),
    }
}
