//! The frame tracker: a header-only RFC 6455 parser for one direction of a relayed
//! WebSocket.
//!
//! wsdrain never unmasks or copies payloads. It only needs to know where frames start
//! and end, so that it can count messages and bytes and inject a frame of its own at a
//! boundary (RFC 6455 §5.4 lets control frames sit between the fragments of a message).
//! The tracker is fed the bytes of each read and answers how many of them may be
//! forwarded now and whether something worth the relay's attention happened.
//!
//! Two rules keep injection safe without per-message buffers:
//! * a frame header is consumed only once all its bytes are present, so forwarded
//!   bytes never end inside a header;
//! * a control frame (at most 125 bytes of payload) is consumed only once it is whole,
//!   so a close frame can be inspected, forwarded or withheld as one piece.
//!
//! The relay keeps the unconsumed tail (at most 139 bytes) and feeds it again with the
//! next read.
//!
//! Frames that break the RFC (reserved opcodes, bad RSV bits, unmasked client frames,
//! oversized control frames) are passed through untouched: judging them is the app's
//! job, and Autobahn checks that the app's verdict reaches the client unchanged.
//!
//! Flow: bytes of one read in (from a relay pump); out, how many may be forwarded and an
//! [`Event`] (close, pong, boundary, too big) for the relay to act on.

#[cfg(test)]
mod tests;

/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;
const OP_CONTINUATION: u8 = 0x0;
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Where the tracker should stop early, so the relay can inject a frame there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Consume everything that can be consumed.
    Never,
    /// Stop at the first frame boundary.
    FrameEnd,
    /// Stop at the first boundary that is not inside a fragmented message.
    MessageEnd,
}

/// What [`FrameTracker::feed`] found, besides the consumed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing special: all complete bytes were consumed (an incomplete header or
    /// control frame may remain unconsumed at the end).
    None,
    /// Stopped at the boundary requested with [`StopAt`].
    Boundary,
    /// A whole close frame sits at `start..consumed`; `code` is its status code when
    /// the payload carries one.
    Close { start: usize, code: Option<u16> },
    /// A whole pong frame sits at `start..consumed` (reported only by a tracker made
    /// with [`FrameTracker::reporting_pongs`]).
    Pong { start: usize },
    /// The frame starting at `consumed` would make the current message larger than
    /// the configured limit. Nothing of that frame was consumed.
    TooBig,
}

/// The result of one [`FrameTracker::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// How many leading bytes of the input are accounted for (forward or drop them).
    pub consumed: usize,
    /// Data messages whose final frame header was consumed in this call.
    pub messages: u32,
    /// Data frames (any fragment) whose header was consumed in this call.
    pub data_frames: u32,
    /// Frame headers that break RFC 6455 in a way the tracker can see (reserved
    /// opcode, wrong masking for the direction, control frame over 125 bytes). They are
    /// relayed anyway, for the app (or client) to judge; this only counts them.
    pub violations: u32,
    /// Why the tracker stopped.
    pub event: Event,
}

/// Frame-boundary state for one direction of a WebSocket connection.
///
/// Plain data, 32 bytes: an idle connection carries two of these and no buffers.
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    /// Payload bytes of the current data frame not yet seen.
    payload_left: u64,
    /// Payload bytes of the current (possibly fragmented) message so far.
    message_len: u64,
    /// Limit for `message_len`; 0 means none.
    max_message: u64,
    /// Inside a fragmented data message (a non-final data frame was seen).
    in_message: bool,
    /// Stop at pong frames so the relay can swallow the answers to its own pings.
    report_pongs: bool,
    /// Frames in this direction must be masked (client to app) or not (app to client);
    /// `None` skips the check.
    masked: Option<bool>,
}

impl FrameTracker {
    /// A tracker that reports [`Event::TooBig`] for messages over `max_message` bytes
    /// (0 disables the limit).
    pub fn new(max_message: u64) -> Self {
        FrameTracker {
            max_message,
            ..Self::default()
        }
    }

    /// Counts frames whose masking is wrong for this direction as violations.
    pub fn expecting_mask(mut self, masked: bool) -> Self {
        self.masked = Some(masked);
        self
    }

    /// Also reports [`Event::Pong`], for the client-to-app side when wsdrain pings.
    pub fn reporting_pongs(mut self) -> Self {
        self.report_pongs = true;
        self
    }

    /// Lifts the message size limit: after [`Event::TooBig`] the relay only discards,
    /// and the offending frame must be parsed past.
    pub fn disable_limit(&mut self) {
        self.max_message = 0;
    }

    /// True between frames: nothing of a frame has been consumed without its end.
    pub fn at_frame_boundary(&self) -> bool {
        self.payload_left == 0
    }

    /// True between messages: at a frame boundary and not inside a fragmented message.
    pub fn at_message_boundary(&self) -> bool {
        self.payload_left == 0 && !self.in_message
    }

    /// Accounts for the bytes of `buf` in order. See [`Feed`] and [`Event`].
    pub fn feed(&mut self, buf: &[u8], stop: StopAt) -> Feed {
        let mut feed = Feed {
            consumed: 0,
            messages: 0,
            data_frames: 0,
            violations: 0,
            event: Event::None,
        };
        let mut pos = 0usize;
        let len = buf.len();
        loop {
            if self.payload_left > 0 {
                let avail = (len - pos) as u64;
                if avail < self.payload_left {
                    self.payload_left -= avail;
                    feed.consumed = len;
                    return feed;
                }
                pos += self.payload_left as usize;
                self.payload_left = 0;
            }
            feed.consumed = pos;
            // At a frame boundary.
            match stop {
                StopAt::FrameEnd => {
                    feed.event = Event::Boundary;
                    return feed;
                }
                StopAt::MessageEnd if !self.in_message => {
                    feed.event = Event::Boundary;
                    return feed;
                }
                _ => {}
            }
            let Some(header) = parse_header(&buf[pos..]) else {
                return feed;
            };
            let reserved = matches!(header.opcode, 0x3..=0x7 | 0xB..=0xF);
            let oversized_control =
                header.opcode & 0x8 != 0 && header.payload_len > MAX_CONTROL_PAYLOAD;
            let wrong_mask = self.masked.is_some_and(|m| m != header.mask.is_some());
            // Counted where the header is consumed, so a header seen again after a short
            // read is not counted twice.
            let violation = u32::from(reserved || oversized_control || wrong_mask);
            if header.opcode & 0x8 != 0 && header.payload_len <= MAX_CONTROL_PAYLOAD {
                // A well-formed control frame: only ever consumed whole.
                let end = header.len + header.payload_len as usize;
                if len - pos < end {
                    return feed;
                }
                feed.violations += violation;
                let start = pos;
                pos += end;
                feed.consumed = pos;
                if header.opcode == OP_CLOSE {
                    let payload = &buf[start + header.len..pos];
                    feed.event = Event::Close {
                        start,
                        code: close_code(payload, header.mask),
                    };
                    return feed;
                }
                if header.opcode == OP_PONG && self.report_pongs {
                    feed.event = Event::Pong { start };
                    return feed;
                }
                continue;
            }
            if header.opcode & 0x8 == 0 {
                // A data frame (or a reserved data opcode: passed through, counted).
                let message_len = if header.opcode == OP_CONTINUATION {
                    self.message_len.saturating_add(header.payload_len)
                } else {
                    header.payload_len
                };
                if self.max_message > 0 && message_len > self.max_message {
                    feed.event = Event::TooBig;
                    return feed;
                }
                feed.violations += violation;
                self.message_len = message_len;
                self.in_message = !header.fin;
                feed.data_frames += 1;
                if header.fin {
                    feed.messages += 1;
                }
            } else if self.max_message > 0 && header.payload_len > self.max_message {
                // A control frame over 125 bytes is streamed like data; the size limit
                // still applies to it.
                feed.event = Event::TooBig;
                return feed;
            } else {
                feed.violations += violation;
            }
            pos += header.len;
            self.payload_left = header.payload_len;
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload_len: u64,
    /// Header length in bytes (2 to 14).
    len: usize,
}

/// Parses a frame header at the start of `buf`, or `None` when it is not complete.
#[inline]
fn parse_header(buf: &[u8]) -> Option<Header> {
    let (&b0, rest) = buf.split_first()?;
    let &b1 = rest.first()?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7f {
        126 => {
            let b = buf.get(2..4)?;
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(len..len + 4)?.try_into().ok()?;
        len += 4;
        Some(m)
    } else {
        None
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask,
        payload_len,
        len,
    })
}

/// The status code of a close frame payload, unmasking only its first two bytes.
fn close_code(payload: &[u8], mask: Option<[u8; 4]>) -> Option<u16> {
    let (a, b) = (*payload.first()?, *payload.get(1)?);
    let m = mask.unwrap_or([0; 4]);
    Some(u16::from_be_bytes([a ^ m[0], b ^ m[1]]))
}

/// The unmasked payload of one whole control frame (`frame` holds exactly the frame).
pub fn control_payload(frame: &[u8]) -> Vec<u8> {
    let Some(header) = parse_header(frame) else {
        return Vec::new();
    };
    let payload = frame.get(header.len..).unwrap_or_default();
    let m = header.mask.unwrap_or([0; 4]);
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ m[i % 4])
        .collect()
}

/// Builds an unmasked ping frame (wsdrain to the client) carrying `payload`.
pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(125);
    let mut frame = vec![0x80 | OP_PING, len as u8];
    frame.extend_from_slice(&payload[..len]);
    frame
}

/// Builds a close frame with `code` and `reason`, masked with `mask` when given
/// (frames towards the app must be masked, RFC 6455 §5.3). The reason is cut to fit
/// the 125-byte control payload at a UTF-8 character boundary.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let payload_len = 2 + reason.len();
    let mut frame = Vec::with_capacity(2 + 4 + payload_len);
    frame.push(0x80 | OP_CLOSE);
    frame.push(if mask.is_some() { 0x80 } else { 0 } | payload_len as u8);
    if let Some(m) = mask {
        frame.extend_from_slice(&m);
    }
    let start = frame.len();
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    if let Some(m) = mask {
        for (i, byte) in frame[start..].iter_mut().enumerate() {
            *byte ^= m[i % 4];
        }
    }
    frame
}
