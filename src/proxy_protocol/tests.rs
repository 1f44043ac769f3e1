use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn encoded_headers_parse_back() {
    for version in [Version::V1, Version::V2] {
        for (src, dst) in [
            ("203.0.113.7:40000", "10.0.0.1:15080"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:15080"),
        ] {
            let h = encode(version, addr(src), addr(dst));
            assert_eq!(header_len(&h).expect("len"), Some(h.len()));
            assert_eq!(
                parse(&h).expect("parse"),
                Some(addr(src)),
                "{version:?} {src}"
            );
        }
    }
    // Mixed families become v4-mapped v6.
    let h = encode(Version::V1, addr("203.0.113.7:1"), addr("[::1]:2"));
    assert_eq!(
        std::str::from_utf8(&h).expect("ascii"),
        "PROXY TCP6 ::ffff:203.0.113.7 ::1 1 2\r\n"
    );
}

#[test]
fn v1_bytes_match_the_spec_example() {
    let h = encode(
        Version::V1,
        addr("192.168.0.1:56324"),
        addr("192.168.0.11:443"),
    );
    assert_eq!(h, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
}

#[test]
fn v2_bytes_match_the_spec_layout() {
    let h = encode(Version::V2, addr("1.2.3.4:258"), addr("5.6.7.8:772"));
    let mut want = V2_SIG.to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4]);
    assert_eq!(h, want);
}

#[test]
fn local_and_unknown_carry_no_address() {
    assert_eq!(parse(b"PROXY UNKNOWN\r\n").expect("ok"), None);
    let mut local = V2_SIG.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    assert_eq!(parse(&local).expect("ok"), None);
}

#[test]
fn malformed_headers_are_rejected() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let mut v2 = V2_SIG.to_vec();
    v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
    v2.extend_from_slice(&[0; 12]);
    assert!(parse(&v2).is_err(), "version 3");
    let mut short = V2_SIG.to_vec();
    short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
    assert!(parse(&short).is_err(), "address block too short");
    assert!(matches!(
        header_len(b"GET / HTTP/1.1\r\n"),
        Err(HeaderError::Missing)
    ));
    assert_eq!(
        header_len(b"PRO").expect("prefix"),
        None,
        "a prefix of PROXY waits for more"
    );
    assert!(header_len(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)).is_err());
}
