//! The one WebSocket frame encoder the tests share: the integration tests (through
//! `tests/common`) and the frame tracker's unit tests (`src/frame_tracker/tests.rs`, by
//! path) encode frames exactly as a peer puts them on the wire, any opcode, any length,
//! masked or not, with nothing checked, so a test can send what a library would refuse.

/// How a frame's payload length is written. RFC 6455 asks for the shortest form, but a
/// receiver must not rely on it, so tests send the longer ones too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// 7 bits when it fits, else 16, else 64.
    Shortest,
    /// 16 bits even for a short payload (64 when it does not fit).
    AtLeast16,
    /// Always 64 bits.
    Bits64,
}

/// Encodes one frame: FIN bit, opcode, the shortest length form, the mask key if any,
/// and the payload (masked with that key).
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_with(fin, opcode, payload, mask, LengthForm::Shortest)
}

/// [`frame`] with the length written in the given form.
pub fn frame_with(
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    form: LengthForm,
) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 && form == LengthForm::Shortest {
        out.push(mbit | n as u8);
    } else if n <= 0xffff && form != LengthForm::Bits64 {
        out.push(mbit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}
