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

#[test]
fn short_and_truncated_v2_input_is_an_error_not_a_panic() {
    let mut full = V2_SIG.to_vec();
    full.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    for n in 0..full.len() {
        assert!(parse(&full[..n]).is_err(), "{n} bytes of a v2 header");
    }
    assert_eq!(parse(&full).expect("whole"), Some(addr("1.2.3.4:1")));
}

#[test]
fn v2_declared_length_is_honoured() {
    // The declared length says 12, but 20 bytes follow: only a complete, exact header
    // is a header.
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    h.extend_from_slice(&[0; 8]);
    assert!(
        parse(&h).is_err(),
        "trailing bytes past the declared length"
    );
}

/// TLVs as cloud load balancers send them: AWS NLB's 0xEA (VPC endpoint id), GCP's
/// 0xE0 (Private Service Connect id), a CRC32C and NOOP padding, up to the limit.
#[test]
fn v2_tlvs_up_to_the_limit_are_accepted() {
    for tlv_len in [0usize, 27, 11, 512, V2_MAX_LEN - 12] {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&((12 + tlv_len) as u16).to_be_bytes());
        h.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]);
        h.extend(std::iter::repeat_n(0u8, tlv_len));
        assert_eq!(header_len(&h).expect("len"), Some(h.len()));
        assert_eq!(
            parse(&h).expect("parse"),
            Some(addr("203.0.113.7:40000")),
            "{tlv_len} bytes of TLVs"
        );
    }
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&((V2_MAX_LEN + 1) as u16).to_be_bytes());
    assert!(header_len(&h).is_err(), "over the limit");
}

/// The spec's families and transports: UNSPEC and AF_UNIX (no address a TCP peer can
/// have) get LOCAL semantics, the socket's own peer; values the spec does not define
/// "must be rejected as invalid by receivers".
#[test]
fn v2_families_follow_the_spec() {
    let with = |fam: u8, body: &[u8]| {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, fam]);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    };
    let v4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 0, 10];
    assert_eq!(
        parse(&with(0x11, &v4)).expect("tcp4"),
        Some(addr("1.2.3.4:9"))
    );
    assert_eq!(
        parse(&with(0x12, &v4)).expect("udp4"),
        Some(addr("1.2.3.4:9"))
    );
    for local in [0x00, 0x01, 0x02, 0x10, 0x20, 0x30, 0x31, 0x32] {
        let body = if local >> 4 == 3 {
            vec![0u8; 216]
        } else {
            v4.to_vec()
        };
        assert_eq!(
            parse(&with(local, &body)).expect("LOCAL semantics"),
            None,
            "family/transport {local:#04x}"
        );
    }
    for invalid in [0x13, 0x41, 0xf1, 0x0f] {
        assert!(
            parse(&with(invalid, &v4)).is_err(),
            "family/transport {invalid:#04x}"
        );
    }
    // LOCAL ignores whatever block follows, even one of an unknown family.
    let mut local = V2_SIG.to_vec();
    local.extend_from_slice(&[0x20, 0x11, 0, 12]);
    local.extend_from_slice(&v4);
    assert_eq!(parse(&local).expect("LOCAL"), None);
    // Commands other than LOCAL and PROXY are refused.
    let mut bad = V2_SIG.to_vec();
    bad.extend_from_slice(&[0x22, 0x11, 0, 12]);
    bad.extend_from_slice(&v4);
    assert!(parse(&bad).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// `parse` and `header_len` return, never panic, whatever the bytes.
    #[test]
    fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)) {
        let _ = parse(&data);
        let _ = header_len(&data);
    }

    /// Same, for inputs that start with the v2 signature (where the old panics were).
    #[test]
    fn parse_never_panics_after_the_v2_signature(
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)
    ) {
        let mut data = V2_SIG.to_vec();
        data.extend_from_slice(&tail);
        let _ = parse(&data);
        if let Ok(Some(len)) = header_len(&data)
            && len <= data.len()
        {
            let _ = parse(&data[..len]);
        }
    }

    /// Whatever `encode` writes, `header_len` measures exactly and `parse` reads back.
    #[test]
    fn encode_parse_roundtrip(
        a in proptest::prelude::any::<[u8; 16]>(), sport in 1u16.., dport in 1u16..,
        v6 in proptest::prelude::any::<bool>(), v2 in proptest::prelude::any::<bool>()
    ) {
        let ip: IpAddr = if v6 { std::net::Ipv6Addr::from(a).into() } else { std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into() };
        let src = SocketAddr::new(ip, sport);
        let dst = SocketAddr::new(ip, dport);
        let h = encode(if v2 { Version::V2 } else { Version::V1 }, src, dst);
        proptest::prop_assert_eq!(header_len(&h).expect("len"), Some(h.len()));
        proptest::prop_assert_eq!(parse(&h).expect("parse"), Some(src));
    }
}
