use super::*;

// The encoder the integration tests use too: one definition of the wire format.
#[path = "../../tests/common/ws_frame.rs"]
#[allow(dead_code)]
mod ws_frame;
use ws_frame::frame;

/// Feeds `stream` in chunks of `chunk` bytes the way the relay does: an unconsumed tail
/// is kept and fed again in front of the next chunk. Returns (messages, closes, bytes).
fn run(stream: &[u8], chunk: usize) -> (u32, Vec<Option<u16>>, usize) {
    let mut t = FrameTracker::new(0);
    let mut pending: Vec<u8> = Vec::new();
    let (mut messages, mut closes, mut forwarded) = (0, Vec::new(), 0);
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        loop {
            let f = t.feed(&pending, StopAt::Never);
            messages += f.messages;
            forwarded += f.consumed;
            pending.drain(..f.consumed);
            match f.event {
                Event::Close { code, .. } => closes.push(code),
                _ => break,
            }
        }
    }
    assert!(pending.is_empty(), "bytes left unconsumed: {pending:?}");
    (messages, closes, forwarded)
}

fn sample_stream() -> Vec<u8> {
    let m = Some([1, 2, 3, 4]);
    let mut s = Vec::new();
    s.extend(frame(true, 1, b"hello", m));
    s.extend(frame(false, 1, b"frag", m));
    s.extend(frame(true, 9, b"ping", m));
    s.extend(frame(false, 0, &[7u8; 300], m));
    s.extend(frame(true, 0, b"end", m));
    s.extend(frame(true, 2, &vec![9u8; 70_000], m));
    s.extend(frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'], m));
    s
}

#[test]
fn counts_messages_and_finds_close_for_every_chunking() {
    let s = sample_stream();
    for chunk in [1, 2, 3, 7, 13, 64, 1000, s.len()] {
        let (messages, closes, forwarded) = run(&s, chunk);
        assert_eq!(messages, 3, "chunk {chunk}");
        assert_eq!(closes, vec![Some(1000)], "chunk {chunk}");
        assert_eq!(forwarded, s.len(), "chunk {chunk}");
    }
}

#[test]
fn header_is_never_split() {
    let f = frame(true, 2, &[0u8; 200], None);
    let mut t = FrameTracker::new(0);
    // Only the first 3 of 4 header bytes: nothing may be consumed.
    assert_eq!(t.feed(&f[..3], StopAt::Never).consumed, 0);
    let fed = t.feed(&f[..10], StopAt::Never);
    assert_eq!(fed.consumed, 10);
    assert!(!t.at_frame_boundary());
}

#[test]
fn control_frame_is_consumed_whole() {
    let f = frame(true, 9, b"0123456789", Some([9, 9, 9, 9]));
    let mut t = FrameTracker::new(0);
    assert_eq!(t.feed(&f[..f.len() - 1], StopAt::Never).consumed, 0);
    assert_eq!(t.feed(&f, StopAt::Never).consumed, f.len());
}

#[test]
fn stops_at_frame_and_message_boundaries() {
    let mut s = frame(false, 1, b"part one", None);
    let first = s.len();
    s.extend(frame(true, 0, b"part two", None));
    let mut t = FrameTracker::new(0);
    // Between messages both stop kinds stop at once.
    for stop in [StopAt::FrameEnd, StopAt::MessageEnd] {
        let f = t.feed(&s, stop);
        assert_eq!((f.consumed, f.event), (0, Event::Boundary));
    }
    // Inside the fragmented message: FrameEnd stops right away, MessageEnd goes on to
    // the end of the final fragment.
    let f = t.feed(&s[..first], StopAt::Never);
    assert_eq!(f.consumed, first);
    assert!(t.at_frame_boundary() && !t.at_message_boundary());
    let f = t.feed(&s[first..], StopAt::FrameEnd);
    assert_eq!((f.consumed, f.event), (0, Event::Boundary));
    let f = t.feed(&s[first..], StopAt::MessageEnd);
    assert_eq!((f.consumed, f.event), (s.len() - first, Event::Boundary));
    assert!(t.at_message_boundary());
}

#[test]
fn too_big_stops_before_the_offending_header() {
    let mut s = frame(false, 2, &[0u8; 60], None);
    let first = s.len();
    s.extend(frame(true, 0, &[0u8; 60], None));
    let mut t = FrameTracker::new(100);
    let f = t.feed(&s, StopAt::Never);
    assert_eq!((f.consumed, f.event), (first, Event::TooBig));
    // A single frame that declares more than the limit, before its payload arrives.
    let mut t = FrameTracker::new(100);
    let big = frame(true, 2, &[0u8; 101], None);
    let f = t.feed(&big[..4], StopAt::Never);
    assert_eq!((f.consumed, f.event), (0, Event::TooBig));
}

#[test]
fn close_code_is_read_through_the_mask_and_missing_code_is_none() {
    let mut t = FrameTracker::new(0);
    let f = frame(true, 8, &[0x0f, 0xa1], Some([0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(
        t.feed(&f, StopAt::Never).event,
        Event::Close {
            start: 0,
            code: Some(4001)
        }
    );
    let f = frame(true, 8, b"", None);
    assert_eq!(
        t.feed(&f, StopAt::Never).event,
        Event::Close {
            start: 0,
            code: None
        }
    );
}

#[test]
fn oversized_control_frames_pass_through_as_a_stream() {
    // A ping with 200 bytes breaks the RFC; the app must judge it, we just relay it.
    let f = frame(true, 9, &[1u8; 200], None);
    let (messages, closes, forwarded) = run(&f, 50);
    assert_eq!((messages, closes.len(), forwarded), (0, 0, f.len()));
}

#[test]
fn built_close_frames_parse_back() {
    let reason = r#"{"reconnect_after_ms":1234}"#;
    for mask in [None, Some([5, 6, 7, 8])] {
        let f = close_frame(1012, reason, mask);
        let mut t = FrameTracker::new(0);
        assert_eq!(
            t.feed(&f, StopAt::Never),
            Feed {
                consumed: f.len(),
                messages: 0,
                data_frames: 0,
                violations: 0,
                event: Event::Close {
                    start: 0,
                    code: Some(1012)
                }
            }
        );
    }
    // Long reasons are cut to the 125-byte control limit on a char boundary.
    let f = close_frame(1000, &"é".repeat(100), None);
    assert!(f.len() <= 2 + 125);
    assert!(std::str::from_utf8(&f[4..]).is_ok());
}

#[test]
fn pongs_are_reported_only_when_asked_and_unmask() {
    let mask = Some([1, 2, 3, 4]);
    let mut s = frame(true, 1, b"data", mask);
    let pong_at = s.len();
    s.extend(frame(true, 0xA, b"wsdrain", mask));
    let mut quiet = FrameTracker::new(0);
    assert_eq!(quiet.feed(&s, StopAt::Never).event, Event::None);
    let mut t = FrameTracker::new(0).reporting_pongs();
    let f = t.feed(&s, StopAt::Never);
    assert_eq!(
        (f.consumed, f.event),
        (s.len(), Event::Pong { start: pong_at })
    );
    assert_eq!(control_payload(&s[pong_at..]), b"wsdrain");
    assert_eq!(control_payload(&ping_frame(b"abc")), b"abc");
}

#[test]
fn violations_are_counted_and_oversized_control_frames_obey_the_limit() {
    let m = Some([1, 2, 3, 4]);
    let mut s = frame(true, 1, b"ok", m);
    s.extend(frame(true, 1, b"unmasked", None));
    s.extend(frame(true, 0x3, b"reserved", m));
    s.extend(frame(true, 0x9, &[0u8; 200], m));
    let mut t = FrameTracker::new(0).expecting_mask(true);
    let f = t.feed(&s, StopAt::Never);
    // The reserved data opcode still counts as a message (it is relayed as one).
    assert_eq!((f.consumed, f.violations, f.messages), (s.len(), 3, 3));
    // With a limit, a 200-byte ping is refused like a 200-byte message would be.
    let big_ping = frame(true, 0x9, &[0u8; 200], m);
    let mut t = FrameTracker::new(100);
    assert_eq!(t.feed(&big_ping, StopAt::Never).event, Event::TooBig);
    // App-to-client frames must not be masked.
    let mut t = FrameTracker::new(0).expecting_mask(false);
    assert_eq!(
        t.feed(&frame(true, 2, b"x", m), StopAt::Never).violations,
        1
    );
}

#[test]
fn a_violation_split_across_reads_is_counted_once() {
    let ping = frame(true, 0x9, b"unmasked ping", None);
    let mut t = FrameTracker::new(0).expecting_mask(true);
    let first = t.feed(&ping[..5], StopAt::Never);
    assert_eq!((first.consumed, first.violations), (0, 0));
    let second = t.feed(&ping, StopAt::Never);
    assert_eq!((second.consumed, second.violations), (ping.len(), 1));
}
