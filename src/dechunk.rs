//! The chunked transfer coding (RFC 9112 §7.1) read as it passes, for the event streams
//! served off hyper (`proxy::event_stream`): the app's body arrives chunked, and the
//! boundary tracker must see the data, not the chunk sizes.
//!
//! The decoder keeps a few bytes of state and never buffers: each call hands back the
//! runs of data inside the bytes it was given, wherever the chunk framing splits across
//! reads. Chunk extensions and trailers are skipped. A bare LF is taken as a line end,
//! as most parsers do; anything else that breaks the grammar (a size that is not hex,
//! too many digits) is an error, and the stream is then treated as the app gone.

use std::ops::Range;

/// Where in the chunk framing the body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size (`digits` so far).
    Size { value: u64, digits: u8 },
    /// After the size `value`: an extension or whitespace, up to the line end.
    SizeLine { value: u64 },
    /// Inside a chunk's data, with this many bytes to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd { cr: bool },
    /// After the last (zero) chunk: trailer lines, until a blank one. `empty`: nothing
    /// yet on the current line.
    Trailer { empty: bool },
    /// The body is complete.
    Done,
}

/// Why a chunked body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// A chunked body's decoder; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dechunk {
    state: State,
}

impl Default for Dechunk {
    fn default() -> Self {
        Self::new()
    }
}

/// More hex digits than this would not fit a chunk size anyone sends.
const MAX_DIGITS: u8 = 15;

impl Dechunk {
    /// A decoder at the start of a body.
    pub const fn new() -> Self {
        Dechunk {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input` and calls `data` with each run of body data in it (ranges into
    /// `input`, in order). Bytes after the body's end are ignored.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<(), Malformed> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < MAX_DIGITS => State::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(Malformed),
                    None if digits == 0 => return Err(Malformed),
                    None if b == b'\n' => Self::after_size(value),
                    None if matches!(b, b';' | b' ' | b'\t' | b'\r') => State::SizeLine { value },
                    None => return Err(Malformed),
                },
                State::SizeLine { value } if b == b'\n' => Self::after_size(value),
                State::SizeLine { value } => State::SizeLine { value },
                State::Data(left) => {
                    let take = (left as usize).min(input.len() - i);
                    data(i..i + take);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd { cr: false }
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataEnd { cr: false } if b == b'\r' => State::DataEnd { cr: true },
                State::DataEnd { .. } if b == b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                },
                State::DataEnd { .. } => return Err(Malformed),
                State::Trailer { empty } => match b {
                    b'\n' if empty => State::Done,
                    b'\n' => State::Trailer { empty: true },
                    b'\r' => State::Trailer { empty },
                    _ => State::Trailer { empty: false },
                },
                State::Done => return Ok(()),
            };
            i += 1;
        }
        Ok(())
    }

    /// The state once a size line has ended.
    fn after_size(value: u64) -> State {
        if value == 0 {
            State::Trailer { empty: true }
        } else {
            State::Data(value)
        }
    }
}

#[cfg(test)]
mod tests;
