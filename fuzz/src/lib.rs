//! The checks behind wsdrain's fuzz targets, shared by the cargo-fuzz targets
//! (`fuzz_targets/`, nightly) and the stable random loop (`src/bin/random_loop.rs`).
//! A failed check panics; both drivers turn a panic into a crash report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use wsdrain::frame_tracker::{Event, FrameTracker, StopAt};

/// What feeding a byte stream produced, in absolute offsets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    consumed: usize,
    data_frames: u64,
    messages: u64,
    violations: u64,
    closes: Vec<(usize, usize, Option<u16>)>,
    pongs: Vec<(usize, usize)>,
    too_big: Vec<usize>,
}

/// Feeds `data` in reads whose sizes come from `sizes` (cycled), the relay's way: the
/// unconsumed tail is kept and fed again in front of the next read. Checks the per-call
/// invariants as it goes.
fn feed(data: &[u8], sizes: &[usize], max: u64, pongs: bool, mask: bool) -> Outcome {
    let mut t = FrameTracker::new(max).expecting_mask(mask);
    if pongs {
        t = t.reporting_pongs();
    }
    let mut out = Outcome::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].clamp(1, data.len() - at);
        i += 1;
        pending.extend_from_slice(&data[at..at + n]);
        at += n;
        loop {
            let f = t.feed(&pending, StopAt::Never);
            assert!(f.consumed <= pending.len(), "consumed more than given");
            let base = out.consumed;
            out.consumed += f.consumed;
            out.data_frames += u64::from(f.data_frames);
            out.messages += u64::from(f.messages);
            out.violations += u64::from(f.violations);
            assert!(
                f.messages <= f.data_frames,
                "more messages than data frames"
            );
            match f.event {
                Event::Close { start, code } => {
                    assert!(start < f.consumed, "close frame outside the consumed bytes");
                    out.closes.push((base + start, base + f.consumed, code));
                }
                Event::Pong { start } => {
                    assert!(pongs, "pong reported without being asked");
                    assert!(start < f.consumed, "pong frame outside the consumed bytes");
                    out.pongs.push((base + start, base + f.consumed));
                }
                Event::TooBig => {
                    out.too_big.push(base + f.consumed);
                    // What the relay does: parse past the offending frame, no limit.
                    t.disable_limit();
                }
                Event::Boundary => panic!("boundary reported without being asked"),
                Event::None => {
                    assert!(
                        pending.len() - f.consumed <= 14 + 125,
                        "{} bytes held back",
                        pending.len() - f.consumed
                    );
                }
            }
            pending.drain(..f.consumed);
            if f.event == Event::None {
                break;
            }
        }
    }
    out
}

/// Arbitrary bytes through the frame tracker. The first three bytes choose the message
/// limit and the read sizes; the rest is the stream. Fed whole and fed in pieces, the
/// tracker must account for the stream identically, and it must stop at frame
/// boundaries when asked.
pub fn check_frame_tracker(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let max = match data[0] % 4 {
        0 => 0,
        1 => 125,
        2 => 65_536,
        _ => u64::from(data[1]) * 7 + 1,
    };
    let seed = usize::from(data[2]);
    let pongs = data[1] & 1 == 1;
    let mask = data[0] & 0x10 != 0;
    let stream = &data[3..];
    let whole = feed(stream, &[usize::MAX], max, pongs, mask);
    let sizes: Vec<usize> = (0..7).map(|k| 1 + (seed * 31 + k * 17) % 64).collect();
    let pieces = feed(stream, &sizes, max, pongs, mask);
    assert_eq!(whole, pieces, "whole and piecewise feeding disagree");
    let bytewise = feed(stream, &[1], max, pongs, mask);
    assert_eq!(whole, bytewise, "whole and byte-by-byte feeding disagree");
    // Reporting pongs changes where feeding stops, never what is accounted for.
    let other = feed(stream, &sizes, max, !pongs, mask);
    assert_eq!(
        (
            whole.consumed,
            whole.data_frames,
            whole.messages,
            &whole.closes,
            &whole.too_big
        ),
        (
            other.consumed,
            other.data_frames,
            other.messages,
            &other.closes,
            &other.too_big
        ),
        "reporting pongs changed the accounting"
    );

    // Asked to stop at a frame end, the tracker stops only at one.
    let mut t = FrameTracker::new(0);
    let mut pos = 0;
    for _ in 0..64 {
        let f = t.feed(&stream[pos..], StopAt::FrameEnd);
        pos += f.consumed;
        match f.event {
            Event::Boundary => assert!(t.at_frame_boundary(), "boundary inside a frame"),
            Event::None => break,
            _ => {}
        }
        if f.consumed == 0 {
            // At a boundary: step past it the way the relay does after injecting.
            let g = t.feed(&stream[pos..], StopAt::Never);
            pos += g.consumed;
            if g.event == Event::None {
                break;
            }
        }
    }
}

struct Harness {
    proxy: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A tiny app: reads a request head, answers 101 to upgrades (then echoes raw bytes for
/// a moment) and 200 to anything else, then closes.
fn start_app(rt: &tokio::runtime::Runtime) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 1 << 20 {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if head.contains("upgrade: websocket") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                              Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n",
                        )
                        .await;
                    let _ = tokio::time::timeout(Duration::from_millis(200), async {
                        while let Ok(n) = s.read(&mut chunk).await {
                            if n == 0 || s.write_all(&chunk[..n]).await.is_err() {
                                break;
                            }
                        }
                    })
                    .await;
                } else {
                    let _ = s
                        // `Connection: close`: this app serves one request per
                        // connection, and says so (see the ignored hostile test
                        // pooled_connection_closed_by_app_is_not_a_502 for what
                        // happens when an app closes without saying so).
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    addr
}

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = start_app(&rt);
        let listen = free_addr();
        let admin = free_addr();
        let cli = wsdrain::cli::Cli::try_parse_from([
            "wsdrain",
            "proxy",
            "--listen",
            &listen.to_string(),
            "--upstream",
            &app.to_string(),
            "--admin",
            &admin.to_string(),
            "--handshake-timeout",
            "1s",
            "--max-message-size",
            "64KiB",
        ])
        .unwrap();
        let wsdrain::cli::Command::Proxy(opts) = cli.command else {
            unreachable!()
        };
        let sidecar = wsdrain::state::Sidecar::new(&opts);
        let listener = rt
            .block_on(async { tokio::net::TcpListener::bind(listen).await })
            .unwrap();
        rt.spawn(wsdrain::proxy::serve(sidecar, listener, None));
        Harness {
            proxy: listen,
            _rt: rt,
        }
    })
}

/// Arbitrary bytes as one client connection's input to a real proxy. Whatever comes
/// back must be empty (connection closed) or start with an HTTP/1.1 status line, and the
/// proxy must answer a well-formed request right after (it did not wedge or die).
pub fn check_request_head(data: &[u8]) {
    let h = harness();
    let mut s = TcpStream::connect(h.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut resp = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                resp.extend_from_slice(&chunk[..n]);
                let upgraded =
                    resp.starts_with(b"HTTP/1.1 101") && resp.windows(4).any(|w| w == b"\r\n\r\n");
                if upgraded || resp.len() > 1 << 20 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Only an upgraded connection may stay open that long.
                assert!(
                    resp.starts_with(b"HTTP/1.1 101"),
                    "no answer and no close within 5 s: {:?}",
                    String::from_utf8_lossy(&resp)
                );
                break;
            }
            Err(_) => break,
        }
    }
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    assert!(
        resp.is_empty() || resp.starts_with(b"HTTP/1.1 ") || resp.starts_with(b"HTTP/1.0 "),
        "not an HTTP/1.x answer: {:?}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    let text = String::from_utf8_lossy(&resp);
    let status_line = text.lines().next().unwrap_or("");
    assert!(!status_line.contains(" 500"), "internal error: {text:.300}");
    // Still serving (checked every 32 inputs: it costs two more connections).
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if !RUNS
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .is_multiple_of(32)
    {
        return;
    }
    let mut ok = TcpStream::connect(h.proxy).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ok.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = ok.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "proxy stopped serving: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Arbitrary bytes as a PROXY protocol header (what `--accept-proxy-protocol` reads from
/// whoever connects). `parse` must return, never panic, on anything; an address it
/// accepts must survive being written and read again in both versions; and a v2 header
/// must be accepted only when its length is exactly 16 + the declared length.
pub fn check_proxy_protocol(data: &[u8]) {
    use wsdrain::proxy_protocol::{Version, encode, parse};
    const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let parsed = parse(data);
    if data.starts_with(V2_SIG) && parsed.is_ok() {
        assert!(
            data.len() >= 16,
            "a v2 header shorter than 16 bytes was accepted"
        );
        let declared = usize::from(u16::from_be_bytes([data[14], data[15]]));
        assert_eq!(
            data.len(),
            16 + declared,
            "v2 length differs from the declared one"
        );
    }
    if let Ok(Some(src)) = parsed {
        let dst: SocketAddr = "10.0.0.1:80".parse().expect("literal");
        for version in [Version::V1, Version::V2] {
            let again = parse(&encode(version, src, dst))
                .unwrap_or_else(|e| panic!("{version:?} re-encoding of {src} refused: {e}"));
            let again = again.expect("an address");
            // Mixed families come back v4-mapped; compare as IPv6.
            let v6 = |a: SocketAddr| match a.ip() {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                std::net::IpAddr::V6(v6) => v6,
            };
            assert_eq!(v6(again), v6(src), "{version:?} address changed");
            assert_eq!(again.port(), src.port(), "{version:?} port changed");
        }
    }
}

/// Arbitrary bytes as a Server-Sent Events stream from the app. Read in pieces whose
/// sizes come from the first byte, `SseTracker::next_boundary` must end where reading
/// byte by byte does, report only real boundaries, never panic; and the closing suffix
/// at any point must never complete (dispatch) an open event.
pub fn check_sse_tracker(data: &[u8]) {
    use wsdrain::sse_tracker::SseTracker;
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 31) + 1;
    let mut bytewise = SseTracker::new();
    let mut boundary_at = vec![true];
    for &b in stream {
        bytewise.feed(&[b]);
        boundary_at.push(bytewise.at_boundary());
    }
    let mut t = SseTracker::new();
    for (k, piece) in stream.chunks(size).enumerate() {
        let mut from = 0;
        while let Some(n) = t.next_boundary(&piece[from..]) {
            assert!(
                n >= 1 && from + n <= piece.len(),
                "boundary outside the read"
            );
            from += n;
            assert!(
                boundary_at[k * size + from],
                "next_boundary stopped where the stream is not at a boundary"
            );
        }
    }
    assert_eq!(
        t, bytewise,
        "reading in pieces ended elsewhere than byte by byte"
    );
    for p in [0, stream.len() / 2, stream.len()] {
        let mut at = SseTracker::new();
        at.feed(&stream[..p]);
        let open = at.event_pending();
        for &b in at.closing_suffix(1234).iter() {
            at.feed(&[b]);
            assert!(
                !open || at.event_pending(),
                "the suffix dispatched an open event"
            );
        }
        assert!(!at.event_pending() || open);
    }
}

/// Arbitrary bytes as a chunked body from the app (`wsdrain::dechunk`, read off hyper for
/// event streams). Fed in pieces whose sizes come from the first byte, the decoder must
/// give the same data, the same verdict and the same end as fed whole, keep its data
/// runs inside the bytes it was given, and never panic.
pub fn check_dechunk(data: &[u8]) {
    use wsdrain::dechunk::Dechunk;
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 17) + 1;
    let mut whole = Dechunk::new();
    let mut whole_out = Vec::new();
    let whole_ok = whole
        .feed(body, |r| whole_out.extend_from_slice(&body[r]))
        .is_ok();
    let mut pieces = Dechunk::new();
    let mut pieces_out = Vec::new();
    let mut pieces_ok = true;
    for piece in body.chunks(size) {
        let fed = pieces.feed(piece, |r| {
            assert!(r.end <= piece.len(), "a data run outside the bytes given");
            pieces_out.extend_from_slice(&piece[r]);
        });
        if fed.is_err() {
            pieces_ok = false;
            break;
        }
        if pieces.is_done() {
            break;
        }
    }
    assert_eq!(
        whole_ok, pieces_ok,
        "the verdict depends on how the bytes were split"
    );
    if whole_ok {
        assert_eq!(
            whole_out, pieces_out,
            "the data depends on how the bytes were split"
        );
        assert_eq!(
            whole.is_done(),
            pieces.is_done(),
            "the end depends on the split"
        );
    } else {
        assert!(pieces_out.len() <= body.len());
    }
}

/// The TLS accept path: arbitrary bytes as a client's first flight into wsdrain's own
/// handshake (`wsdrain::tls::Tls::accept`: rustls' unbuffered session and its
/// ClientHello parser, the proxy's configuration and limits) over a real loopback socket. Whatever the
/// bytes, the handshake must end — done, refused or timed out — and never panic. The
/// certificate is a test fixture (`fuzz/fixtures/`).
pub fn check_tls_accept(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wsdrain::tls::{CertPaths, Tls, TlsSettings};

    struct Harness {
        rt: tokio::runtime::Runtime,
        tls: Tls,
        listener: tokio::net::TcpListener,
    }
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    let h = HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let settings = TlsSettings {
            paths: CertPaths {
                cert: fixtures.join("tls.crt"),
                key: fixtures.join("tls.key"),
            },
            client_ca: None,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 16,
            alpn_http1: true,
        };
        let metrics = wsdrain::metrics::Metrics::new();
        let (tls, _reloader) = Tls::new(&settings, &metrics).expect("fixture pair loads");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("loopback listener");
        Harness { rt, tls, listener }
    });
    h.rt.block_on(async {
        let addr = h.listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = h.listener.accept().await.expect("accept");
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let outcome = tokio::time::timeout(Duration::from_secs(10), h.tls.accept(server)).await;
        assert!(outcome.is_ok(), "the handshake did not end");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sink)).await;
    });
}
