use super::*;

/// Decodes `input` split at every place in `splits`, returning the data and whether
/// the body is complete.
fn decode(input: &[u8], splits: &[usize]) -> Result<(Vec<u8>, bool), Malformed> {
    let mut d = Dechunk::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&input.len())) {
        let piece = &input[start..end];
        d.feed(piece, |r| out.extend_from_slice(&piece[r]))?;
        start = end;
    }
    Ok((out, d.is_done()))
}

#[test]
fn data_comes_out_whole_however_the_framing_is_split() {
    let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
    for a in 0..=body.len() {
        for b in a..=body.len() {
            let (data, done) = decode(body, &[a, b]).expect("valid");
            assert_eq!(data, b"hello, world", "split at {a}, {b}");
            assert!(done, "split at {a}, {b}");
        }
    }
}

#[test]
fn a_body_is_complete_only_after_its_last_chunk_and_blank_line() {
    assert_eq!(decode(b"3\r\nabc\r\n", &[]), Ok((b"abc".to_vec(), false)));
    assert_eq!(
        decode(b"3\r\nabc\r\n0\r\n", &[]),
        Ok((b"abc".to_vec(), false))
    );
    assert_eq!(
        decode(b"3\r\nabc\r\n0\r\n\r\n", &[]),
        Ok((b"abc".to_vec(), true))
    );
    assert_eq!(decode(b"3\nabc\n0\n\n", &[]), Ok((b"abc".to_vec(), true)));
    assert_eq!(
        decode(b"A\r\n0123456789\r\n0\r\n\r\n", &[]),
        Ok((b"0123456789".to_vec(), true))
    );
}

#[test]
fn bytes_past_the_end_are_ignored() {
    assert_eq!(
        decode(b"1\r\na\r\n0\r\n\r\nGARBAGE", &[]),
        Ok((b"a".to_vec(), true))
    );
}

#[test]
fn broken_framing_is_an_error_not_data() {
    for bad in [
        &b"zz\r\n"[..],
        b"\r\n",
        b"3\r\nabcX",
        b"1234567890123456\r\n",
        b"3 x\r\nabc\r\nq",
    ] {
        let got = decode(bad, &[]);
        assert!(
            got.is_err() || got.as_ref().is_ok_and(|(d, _)| d.len() <= 3),
            "{:?}: {got:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(decode(b"zz\r\n", &[]), Err(Malformed));
    assert_eq!(decode(b"3\r\nabcX", &[]), Err(Malformed));
    assert_eq!(decode(b"1234567890123456\r\n", &[]), Err(Malformed));
}
