//! Property tests for the frame tracker: random valid frame streams, cut at random
//! points and fed the way the relay feeds them (the unconsumed tail is kept and fed
//! again in front of the next read), must be accounted for exactly as a plain
//! reference parser sees them. Random garbage must never panic.

// The encoder every test shares, without the rest of `tests/common`.
#[path = "common/ws_frame.rs"]
#[allow(dead_code)]
mod ws_frame;

use proptest::prelude::*;
use ws_frame::{LengthForm, frame_with};
use wsdrain::frame_tracker::{Event, Feed, FrameTracker, StopAt};

/// One frame of a generated stream.
#[derive(Debug, Clone)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
    /// Force the 16- or 64-bit length encoding even for short payloads (legal on the
    /// wire, RFC 6455 says "minimal" but peers must not rely on it).
    wide: u8,
}

impl Frame {
    fn encode(&self) -> Vec<u8> {
        let form = match self.wide {
            0 => LengthForm::Shortest,
            1 => LengthForm::AtLeast16,
            _ => LengthForm::Bits64,
        };
        frame_with(self.fin, self.opcode, &self.payload, self.mask, form)
    }

    fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// What the reference parser knows about an encoded stream.
#[derive(Debug, Default)]
struct Reference {
    /// Byte offset where each frame starts and ends.
    spans: Vec<(usize, usize)>,
    /// Data frames and completed data messages.
    data_frames: u32,
    /// Frames with a reserved opcode, per masking (unmasked, masked).
    reserved: [u32; 2],
    /// Frames by masking (unmasked, masked).
    by_mask: [u32; 2],
    messages: u32,
    /// (start, end, code) of each close frame.
    closes: Vec<(usize, usize, Option<u16>)>,
    /// (start, end) of each pong frame.
    pongs: Vec<(usize, usize)>,
    /// Offsets that are message boundaries (frame ends outside a fragmented message).
    message_ends: Vec<usize>,
    /// Index of the first data frame that makes its message exceed the limit.
    too_big_at: Option<usize>,
}

fn reference(frames: &[Frame], max_message: u64) -> (Vec<u8>, Reference) {
    let mut r = Reference::default();
    let mut wire = Vec::new();
    let mut in_message = false;
    let mut message_len = 0u64;
    r.message_ends.push(0);
    for (i, f) in frames.iter().enumerate() {
        let start = wire.len();
        wire.extend(f.encode());
        let end = wire.len();
        r.spans.push((start, end));
        let m = usize::from(f.mask.is_some());
        r.by_mask[m] += 1;
        if matches!(f.opcode, 3..=7 | 11..=15) {
            r.reserved[m] += 1;
        }
        if f.is_control() {
            if f.opcode == 0x8 {
                let code = (f.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                r.closes.push((start, end, code));
            }
            if f.opcode == 0xA {
                r.pongs.push((start, end));
            }
        } else {
            message_len = if f.opcode == 0 {
                message_len + f.payload.len() as u64
            } else {
                f.payload.len() as u64
            };
            if max_message > 0 && message_len > max_message && r.too_big_at.is_none() {
                r.too_big_at = Some(i);
            }
            r.data_frames += 1;
            if f.fin {
                r.messages += 1;
            }
            in_message = !f.fin;
        }
        if !in_message {
            r.message_ends.push(end);
        }
    }
    (wire, r)
}

/// A valid message: one data frame, or a fragmented one with control frames between the
/// fragments; followed by some control frames (pings, pongs, closes).
fn message_strategy() -> impl Strategy<Value = Vec<Frame>> {
    let mask = prop::option::of(any::<[u8; 4]>());
    let payload = prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..130),
        3 => prop::collection::vec(any::<u8>(), 120..300),
        1 => prop::collection::vec(any::<u8>(), 65_530..65_540),
    ];
    let data_opcode = prop_oneof![Just(1u8), Just(2u8), 3u8..=7];
    let control = (
        prop_oneof![Just(9u8), Just(10u8), Just(8u8), 11u8..=15],
        prop::collection::vec(any::<u8>(), 0..=125),
        mask.clone(),
        0u8..3,
    )
        .prop_map(|(opcode, payload, mask, wide)| Frame {
            fin: true,
            opcode,
            mask,
            payload,
            // Peers use the short form for control frames; the wider ones are legal
            // encodings of the same length and must be tracked the same way.
            wide,
        });
    (
        data_opcode,
        prop::collection::vec((payload, mask.clone(), 0u8..3), 1..4),
        prop::collection::vec(prop::option::of(control.clone()), 1..4),
        prop::collection::vec(control, 0..2),
    )
        .prop_map(|(opcode, fragments, between, after)| {
            let n = fragments.len();
            let mut frames = Vec::new();
            for (i, (payload, mask, wide)) in fragments.into_iter().enumerate() {
                frames.push(Frame {
                    fin: i + 1 == n,
                    opcode: if i == 0 { opcode } else { 0 },
                    mask,
                    payload,
                    wide,
                });
                if i + 1 < n
                    && let Some(Some(c)) = between.get(i)
                {
                    frames.push(c.clone());
                }
            }
            frames.extend(after);
            frames
        })
}

fn stream_strategy() -> impl Strategy<Value = Vec<Frame>> {
    prop::collection::vec(message_strategy(), 1..8).prop_map(|m| m.concat())
}

/// Random cut points: read sizes as the kernel might hand them to the relay.
fn cuts_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![4 => 1usize..20, 3 => 20usize..400, 1 => 400usize..20_000],
        1..200,
    )
}

/// What feeding a stream produced, in absolute offsets.
#[derive(Debug, Default)]
struct Observed {
    consumed: usize,
    data_frames: u32,
    messages: u32,
    violations: u32,
    closes: Vec<(usize, usize, Option<u16>)>,
    pongs: Vec<(usize, usize)>,
    boundaries: Vec<(usize, StopAt)>,
    too_big: Vec<usize>,
}

/// Feeds `wire` in reads of the sizes in `cuts` (cycled), keeping the unconsumed tail
/// as the relay does and asking for the stop kinds in `stops` (cycled). With `pongs`,
/// the tracker also reports pong frames (the client-to-app side when wsdrain pings);
/// with `mask`, it expects that masking (client to app: masked).
fn feed_like_relay(
    wire: &[u8],
    cuts: &[usize],
    stops: &[StopAt],
    max: u64,
    pongs: bool,
    mask: Option<bool>,
) -> Observed {
    let new = |max| {
        let mut t = FrameTracker::new(max);
        if let Some(m) = mask {
            t = t.expecting_mask(m);
        }
        if pongs { t.reporting_pongs() } else { t }
    };
    let mut t = new(max);
    let mut obs = Observed::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0usize;
    let mut i = 0usize;
    while at < wire.len() {
        let n = cuts[i % cuts.len()].min(wire.len() - at);
        pending.extend_from_slice(&wire[at..at + n]);
        at += n;
        let mut force_never = false;
        loop {
            let stop = if force_never {
                StopAt::Never
            } else {
                stops[i % stops.len()]
            };
            force_never = false;
            i += 1;
            let base = obs.consumed;
            let f: Feed = t.feed(&pending, stop);
            assert!(f.consumed <= pending.len());
            obs.consumed += f.consumed;
            obs.data_frames += f.data_frames;
            obs.messages += f.messages;
            obs.violations += f.violations;
            match f.event {
                Event::Close { start, code } => {
                    assert!(start < f.consumed);
                    obs.closes.push((base + start, base + f.consumed, code));
                }
                Event::Pong { start } => {
                    assert!(start < f.consumed);
                    obs.pongs.push((base + start, base + f.consumed));
                }
                Event::Boundary => {
                    obs.boundaries.push((base + f.consumed, stop));
                    // The relay injects its frame here, then feeds on without a stop.
                    force_never = true;
                }
                Event::TooBig => {
                    obs.too_big.push(base + f.consumed);
                    // What the relay does: past the offending header, only discarding
                    // remains, but parsing goes on without a limit.
                    t.disable_limit();
                }
                Event::None => {
                    // Only an incomplete header or control frame may stay behind.
                    let tail = &pending[f.consumed..];
                    assert!(
                        tail.len() <= 14 + 125,
                        "tail of {} bytes left unconsumed",
                        tail.len()
                    );
                }
            }
            pending.drain(..f.consumed);
            if f.event == Event::None {
                break;
            }
        }
    }
    assert!(
        pending.is_empty(),
        "{} bytes of a complete stream were never consumed",
        pending.len()
    );
    assert!(t.at_frame_boundary(), "a complete stream ends mid-frame");
    obs
}

fn stop_strategy() -> impl Strategy<Value = StopAt> {
    prop_oneof![
        4 => Just(StopAt::Never),
        1 => Just(StopAt::FrameEnd),
        1 => Just(StopAt::MessageEnd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Without a size limit: every byte consumed, frame, message and close counts as the
    /// reference has them, boundaries only at frame (or message) ends.
    #[test]
    fn tracker_agrees_with_reference(
        frames in stream_strategy(),
        cuts in cuts_strategy(),
        stops in prop::collection::vec(stop_strategy(), 1..16),
        pongs in any::<bool>(),
        mask in prop::option::of(any::<bool>()),
    ) {
        let (wire, r) = reference(&frames, 0);
        let obs = feed_like_relay(&wire, &cuts, &stops, 0, pongs, mask);
        prop_assert_eq!(obs.consumed, wire.len());
        prop_assert_eq!(obs.data_frames, r.data_frames);
        prop_assert_eq!(obs.messages, r.messages);
        prop_assert_eq!(&obs.closes, &r.closes);
        if pongs {
            prop_assert_eq!(&obs.pongs, &r.pongs);
        } else {
            prop_assert!(obs.pongs.is_empty());
        }
        prop_assert!(obs.too_big.is_empty());
        let frame_ends: Vec<usize> =
            std::iter::once(0).chain(r.spans.iter().map(|s| s.1)).collect();
        for (at, stop) in &obs.boundaries {
            match stop {
                StopAt::FrameEnd => prop_assert!(
                    frame_ends.contains(at), "frame boundary at {} is not a frame end", at),
                StopAt::MessageEnd => prop_assert!(
                    r.message_ends.contains(at), "message boundary at {} is inside a message", at),
                StopAt::Never => prop_assert!(false, "boundary reported without being asked"),
            }
        }
    }

    /// Violations (reserved opcodes, frames masked the wrong way for the direction; a
    /// frame that is both counts once) agree with the reference, however the stream is cut.
    #[test]
    fn violations_agree_with_reference(
        frames in stream_strategy(),
        cuts in cuts_strategy(),
        mask in prop::option::of(any::<bool>()),
    ) {
        let (wire, r) = reference(&frames, 0);
        let obs = feed_like_relay(&wire, &cuts, &[StopAt::Never], 0, false, mask);
        let expected = match mask {
            None => r.reserved[0] + r.reserved[1],
            Some(true) => r.by_mask[0] + r.reserved[1],
            Some(false) => r.by_mask[1] + r.reserved[0],
        };
        prop_assert_eq!(obs.violations, expected);
    }

    /// With a size limit: TooBig exactly at the header of the first frame that makes
    /// its message too big, nothing of that frame consumed before it.
    #[test]
    fn tracker_reports_too_big_at_the_right_frame(
        frames in stream_strategy(),
        cuts in cuts_strategy(),
        max in prop_oneof![1u64..200, 200u64..70_000],
    ) {
        let (wire, r) = reference(&frames, max);
        let obs = feed_like_relay(&wire, &cuts, &[StopAt::Never], max, false, None);
        prop_assert_eq!(obs.consumed, wire.len());
        match r.too_big_at {
            Some(i) => prop_assert_eq!(&obs.too_big, &vec![r.spans[i].0]),
            None => {
                prop_assert!(obs.too_big.is_empty());
                prop_assert_eq!(obs.messages, r.messages);
                prop_assert_eq!(&obs.closes, &r.closes);
            }
        }
    }

    /// Garbage never panics, never claims more than it was given, and a tail it leaves
    /// is never longer than a header plus a control payload.
    #[test]
    fn garbage_never_panics(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40),
        stops in prop::collection::vec(stop_strategy(), 1..8),
        max in prop_oneof![Just(0u64), 1u64..100_000, Just(u64::MAX)],
    ) {
        let mut t = FrameTracker::new(max).reporting_pongs();
        let mut pending: Vec<u8> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            pending.extend_from_slice(c);
            for _ in 0..64 {
                let f = t.feed(&pending, stops[i % stops.len()]);
                prop_assert!(f.consumed <= pending.len());
                if let Event::Close { start, .. } | Event::Pong { start } = f.event {
                    prop_assert!(start < f.consumed);
                }
                pending.drain(..f.consumed);
                match f.event {
                    Event::None => {
                        prop_assert!(pending.len() <= 14 + 125);
                        break;
                    }
                    Event::TooBig => t.disable_limit(),
                    Event::Boundary if f.consumed == 0 => break,
                    _ => {}
                }
            }
        }
    }

    /// Huge declared lengths (all 64-bit values, including ones with the top bit set,
    /// which RFC 6455 forbids) are tracked as a count, never allocated or overflowed.
    #[test]
    fn huge_declared_lengths(len in any::<u64>(), masked in any::<bool>(), opcode in 0u8..16) {
        let mut hdr = vec![0x80 | opcode, if masked { 0xff } else { 0x7f }];
        hdr.extend_from_slice(&len.to_be_bytes());
        if masked {
            hdr.extend_from_slice(&[1, 2, 3, 4]);
        }
        let mut t = FrameTracker::new(0);
        let f = t.feed(&hdr, StopAt::Never);
        prop_assert_eq!(f.consumed, hdr.len());
        prop_assert_eq!(t.at_frame_boundary(), len == 0);
        let body = vec![0u8; 1000];
        let f = t.feed(&body, StopAt::Never);
        prop_assert!(f.consumed <= body.len());
        let mut limited = FrameTracker::new(1 << 20);
        let f = limited.feed(&hdr, StopAt::Never);
        if opcode & 0x8 == 0 && len > 1 << 20 {
            prop_assert_eq!(f.event, Event::TooBig);
            prop_assert_eq!(f.consumed, 0);
        }
    }
}

/// The smallest case of a bug found by the property above (fixed): one masked frame with
/// a reserved control opcode, arriving in two reads. The first feed sees the whole header but not the payload, so it
/// consumes nothing (control frames are consumed whole); the header is parsed again with
/// the next read. The violation is counted both times.
#[test]
fn violation_in_a_split_control_frame_counts_once() {
    let f = Frame {
        fin: true,
        opcode: 0xB,
        mask: Some([1, 2, 3, 4]),
        payload: b"0123456789".to_vec(),
        wide: 0,
    }
    .encode();
    let mut t = FrameTracker::new(0).expecting_mask(true);
    let first = t.feed(&f[..8], StopAt::Never);
    assert_eq!(first.consumed, 0);
    let second = t.feed(&f, StopAt::Never);
    assert_eq!(second.consumed, f.len());
    assert_eq!(first.violations + second.violations, 1);
}
