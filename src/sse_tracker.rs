//! Where a Server-Sent Events stream can end without losing an event.
//!
//! An `EventSource` dispatches an event at a blank line and throws away whatever event
//! is still pending when the stream ends. So the drain ends an SSE response only at an
//! event boundary: after a blank line, or where nothing but comment lines came since
//! the last one (keep-alive `:` lines). There it appends `retry: <hint>` and a blank
//! line, which sets the client's reconnection delay and dispatches nothing. When the
//! stream must end elsewhere (the app went away mid-event, the drain's deadline), the
//! [`SseTracker::closing_suffix`] ends the line in progress and gives the hint without
//! a blank line, so the partial event is discarded by the client, never delivered cut.
//!
//! The tracker reads the bytes as they pass and keeps three bits of state: it never
//! buffers, so a 1 MiB event without a boundary costs it nothing. Line ends are LF, CR
//! or CRLF (also when the CR and the LF arrive in different reads), as the HTML
//! standard's event-stream grammar has them.
//!
//! Flow: the proxy's SSE response body feeds every chunk from the app through
//! [`SseTracker::next_boundary`] (while a close waits for a boundary) or
//! [`SseTracker::feed`]; it asks [`SseTracker::at_boundary`] when a close arrives.

use bytes::Bytes;

/// Where in a line the stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Inside a line.
    Inside,
    /// Right after a CR that ended a line: an LF now belongs to the same line end.
    AfterCr,
}

/// Follows an event stream byte by byte; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseTracker {
    line: Line,
    /// A field line (not a comment) came since the last blank line: an event is open.
    pending: bool,
    /// The current line is a field line (meaningful while `line` is `Inside`).
    field_line: bool,
}

impl Default for SseTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SseTracker {
    /// A tracker at the start of a stream (which is a boundary).
    pub const fn new() -> Self {
        SseTracker {
            line: Line::Start,
            pending: false,
            field_line: false,
        }
    }

    /// True where the stream can end with no event cut: no event is open and no line
    /// is half written.
    pub fn at_boundary(&self) -> bool {
        !self.pending && self.line != Line::Inside
    }

    /// True while an event has begun and not yet been dispatched.
    pub fn event_pending(&self) -> bool {
        self.pending || (self.line == Line::Inside && self.field_line)
    }

    fn step(&mut self, b: u8) {
        match (self.line, b) {
            (Line::AfterCr, b'\n') => self.line = Line::Start,
            (Line::Start | Line::AfterCr, b'\r' | b'\n') => {
                // A blank line: the open event (if any) is dispatched.
                self.pending = false;
                self.line = if b == b'\r' {
                    Line::AfterCr
                } else {
                    Line::Start
                };
            }
            (Line::Start | Line::AfterCr, first) => {
                self.field_line = first != b':';
                self.pending |= self.field_line;
                self.line = Line::Inside;
            }
            (Line::Inside, b'\r') => self.line = Line::AfterCr,
            (Line::Inside, b'\n') => self.line = Line::Start,
            (Line::Inside, _) => {}
        }
    }

    /// Reads `bytes` through.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
        }
    }

    /// Reads `bytes` up to the first boundary after at least one byte and returns how
    /// many it read; `None` (everything read) when there is none in `bytes`. A CRLF is
    /// kept whole: a boundary after a CR whose LF is the next byte is taken after the LF.
    pub fn next_boundary(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.step(b);
            if self.at_boundary()
                && !(self.line == Line::AfterCr && bytes.get(i + 1) == Some(&b'\n'))
            {
                return Some(i + 1);
            }
        }
        None
    }

    /// What ends the stream here with a reconnect hint of `hint_ms`: at a boundary,
    /// `retry: N` and a blank line; elsewhere, the line in progress ended and
    /// `retry: N`, with no blank line, so the open event is discarded by the client
    /// instead of dispatched cut.
    pub fn closing_suffix(&self, hint_ms: u32) -> Bytes {
        let end_line = if self.line == Line::Inside { "\n" } else { "" };
        let blank = if self.event_pending() { "" } else { "\n" };
        Bytes::from(format!("{end_line}retry: {hint_ms}\n{blank}"))
    }
}

#[cfg(test)]
mod tests;
