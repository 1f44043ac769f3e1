use super::*;
use proptest::prelude::*;

/// What an `EventSource` makes of a whole stream, per the HTML standard's event-stream
/// interpretation: the events it dispatches (last event id, data), the reconnection
/// time it ends with, and its last event id.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    events: Vec<(String, String)>,
    retry: Option<u64>,
    last_id: String,
}

fn parse(stream: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let (mut data, mut id_buffer) = (String::new(), String::new());
    // Only terminated lines count: at the end of the stream the rest is discarded.
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    for line in lines {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            out.last_id = id_buffer.clone();
            if !data.is_empty() {
                data.pop();
                out.events
                    .push((out.last_id.clone(), std::mem::take(&mut data)));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    out
}

fn tracked(bytes: &[u8]) -> SseTracker {
    let mut t = SseTracker::new();
    t.feed(bytes);
    t
}

#[test]
fn boundaries_are_after_blank_lines_and_comment_lines_only() {
    assert!(SseTracker::new().at_boundary());
    assert!(!tracked(b"data: a").at_boundary());
    assert!(!tracked(b"data: a\n").at_boundary());
    assert!(tracked(b"data: a\n\n").at_boundary());
    assert!(tracked(b"data: a\r\n\r\n").at_boundary());
    assert!(tracked(b"data: a\r\r").at_boundary());
    assert!(tracked(b": keep-alive\n").at_boundary());
    assert!(!tracked(b": keep-alive").at_boundary());
    assert!(!tracked(b"data: a\n\n: c\nid: 3\n").at_boundary());
}

#[test]
fn a_crlf_split_over_two_reads_stays_one_line_end() {
    let mut t = SseTracker::new();
    assert_eq!(t.next_boundary(b"data: a\r\n\r"), Some(10));
    // The LF that completes the CRLF is not another blank line.
    let mut t = tracked(b"data: a\r\n\r");
    t.feed(b"\n");
    assert!(t.at_boundary());
    t.feed(b"data: b\r");
    assert!(!t.at_boundary());
    t.feed(b"\n");
    assert!(
        !t.at_boundary(),
        "CR LF across reads ended one line, not two"
    );
}

#[test]
fn next_boundary_keeps_a_crlf_whole_and_reports_none_without_one() {
    let mut t = SseTracker::new();
    assert_eq!(t.next_boundary(b"data: a\r\n\r\nid: 2"), Some(11));
    let mut t = SseTracker::new();
    assert_eq!(t.next_boundary(b"data: a\ndata: b\n"), None);
    assert_eq!(t.next_boundary(b"\nmore"), Some(1));
}

#[test]
fn the_closing_suffix_never_dispatches_a_partial_event() {
    for (stream, want) in [
        (&b"id: 1\ndata: one\n\n"[..], "retry: 70\n\n"),
        (b"id: 1\ndata: one\n\nid: 2\ndata: tw", "\nretry: 70\n"),
        (b"id: 1\ndata: one\n\nid: 2\n", "retry: 70\n"),
        (b"id: 1\ndata: one\n\n: ping", "\nretry: 70\n\n"),
    ] {
        let t = tracked(stream);
        assert_eq!(t.closing_suffix(70), want.as_bytes(), "{stream:?}");
        let mut ended = stream.to_vec();
        ended.extend_from_slice(&t.closing_suffix(70));
        let parsed = parse(&ended);
        assert_eq!(
            parsed.events,
            vec![("1".into(), "one".into())],
            "{stream:?}"
        );
        assert_eq!(parsed.retry, Some(70));
        assert_eq!(parsed.last_id, "1");
    }
}

#[test]
fn the_tracker_holds_no_buffer() {
    assert!(std::mem::size_of::<SseTracker>() <= 3);
    let mut t = SseTracker::new();
    t.feed(b"data: ");
    let big = vec![b'x'; 1 << 20];
    assert_eq!(t.next_boundary(&big), None);
    assert_eq!(t, tracked(b"data: x"));
}

/// Event streams as apps write them: fields and comments, any line end, blank lines.
fn event_stream() -> impl Strategy<Value = Vec<u8>> {
    let value = "[a-z0-9 :]{0,12}";
    let field = prop_oneof![
        value.prop_map(|v| format!("data: {v}")),
        value.prop_map(|v| format!("data:{v}")),
        "[0-9]{1,4}".prop_map(|v| format!("id: {v}")),
        "[0-9]{1,5}".prop_map(|v| format!("retry: {v}")),
        value.prop_map(|v| format!("event: {v}")),
        value.prop_map(|v| format!(":{v}")),
        Just(String::new()),
        Just("data".to_string()),
    ];
    let end = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
    proptest::collection::vec((field, end), 0..40).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(l, e)| format!("{l}{e}").into_bytes())
            .collect()
    })
}

/// Any bytes, weighted towards the ones the grammar cares about.
fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b'\n'),
            Just(b'\r'),
            Just(b':'),
            Just(b'd'),
            any::<u8>()
        ],
        0..200,
    )
}

/// Every position where the tracker says the stream may end.
fn boundaries(stream: &[u8]) -> Vec<usize> {
    let mut t = SseTracker::new();
    let mut at = vec![0];
    for (i, &b) in stream.iter().enumerate() {
        t.step(b);
        if t.at_boundary() {
            at.push(i + 1);
        }
    }
    at
}

proptest! {
    #[test]
    fn ending_at_any_boundary_with_the_hint_delivers_exactly_the_events_before_it(
        stream in event_stream(),
    ) {
        for p in boundaries(&stream) {
            let mut ended = stream[..p].to_vec();
            ended.extend_from_slice(b"retry: 4321\n\n");
            let got = parse(&ended);
            let before = parse(&stream[..p]);
            prop_assert_eq!(&got.events, &before.events, "at {}", p);
            prop_assert_eq!(got.retry, Some(4321));
            prop_assert_eq!(&got.last_id, &before.last_id);
            // And those are the stream's first events, whole.
            let all = parse(&stream).events;
            prop_assert_eq!(&all[..before.events.len()], &before.events[..]);
        }
    }

    #[test]
    fn the_closing_suffix_anywhere_delivers_no_partial_event(
        stream in prop_oneof![event_stream(), any_stream()],
    ) {
        for p in 0..=stream.len() {
            let t = tracked(&stream[..p]);
            let mut ended = stream[..p].to_vec();
            ended.extend_from_slice(&t.closing_suffix(99));
            let got = parse(&ended);
            let before = parse(&stream[..p]);
            prop_assert_eq!(&got.events, &before.events, "at {}", p);
            prop_assert_eq!(got.retry, Some(99));
            prop_assert_eq!(&got.last_id, &before.last_id);
        }
    }

    #[test]
    fn next_boundary_over_any_reads_finds_the_boundaries_of_the_whole_stream(
        stream in prop_oneof![event_stream(), any_stream()],
        sizes in proptest::collection::vec(1usize..17, 1..8),
    ) {
        let whole = boundaries(&stream);
        let mut t = SseTracker::new();
        let mut found = Vec::new();
        let (mut at, mut k) = (0, 0);
        while at < stream.len() {
            let end = (at + sizes[k % sizes.len()]).min(stream.len());
            k += 1;
            let mut from = at;
            while let Some(n) = t.next_boundary(&stream[from..end]) {
                from += n;
                found.push(from);
            }
            at = end;
        }
        prop_assert_eq!(t, tracked(&stream));
        // Every position found is a boundary; every boundary is found, except the
        // position between the CR and the LF of a CRLF read in one piece.
        for p in &found {
            prop_assert!(whole.contains(p), "{} is not a boundary", p);
        }
        for &p in whole.iter().skip(1) {
            let inside_crlf = stream[p - 1] == b'\r' && stream.get(p) == Some(&b'\n');
            prop_assert!(inside_crlf || found.contains(&p), "boundary {} missed", p);
        }
    }
}
