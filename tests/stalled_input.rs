//! What input that stops halfway costs while it waits: connections stopped mid-header
//! (either side) or mid-control-frame pin no buffer, and a half-sent PROXY header costs
//! no CPU. Measured on a real `wsdrain proxy` process (RSS, CPU ticks from /proc).

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::capture_app::*;
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// An app for [`partial_headers_pin_no_buffers`]: after the 101 it waits for the
/// client's first frame, then sends, in one write, a 16,383-byte frame and the first
/// byte (`0x82`) of the next header, and goes quiet. When a second client frame arrives
/// it first completes its own frame (`82 05 "hello"`) and then echoes the client's payload.
async fn partial_header_app(
    got_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let got_first = got_first.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if !matches!(s.read(&mut byte).await, Ok(1)) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                let Ok(first) = read_frame(&mut s).await else {
                    return;
                };
                assert_eq!(first.payload.len(), 16_375, "the client's frame, whole");
                let mut out = frame(true, 2, &[0xa5; 16_379], None);
                assert_eq!(out.len(), 16_383);
                out.push(0x82);
                if s.write_all(&out).await.is_err() {
                    return;
                }
                got_first.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Ok(second) = read_frame(&mut s).await else {
                    return;
                };
                let mut rest = vec![0x05];
                rest.extend_from_slice(b"hello");
                rest.extend(frame(true, second.opcode, &second.payload, None));
                if s.write_all(&rest).await.is_err() {
                    return;
                }
                let mut sink = [0u8; 256];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Issue 13 item 1: a read that ends inside a frame header must not pin a 16 KiB pool
/// buffer while the connection idles. 2,000 connections stop one byte into a header in
/// both directions (after a 16,383-byte frame, so the waiting byte sits at the very end
/// of a full buffer): `wsdrain_relay_buffers_in_use` reads 0 while they idle, and the
/// frames complete correctly when the rest of the header arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_headers_pin_no_buffers() {
    const CONNS: usize = 2_000;
    let got_first = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = partial_header_app(got_first.clone()).await;
    let mut proxy = Proxy::start(app, &["--max-connections", "5000"]).await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let gate = gate.clone();
        let listen = proxy.listen;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            raw_ws(listen, "/").await
        }));
    }
    let mut conns = Vec::with_capacity(CONNS);
    for t in tasks {
        conns.push(timeout(Duration::from_secs(60), t).await.unwrap().unwrap());
    }
    proxy.wait_active(CONNS as u64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_plain = proxy.rss_kib();
    // Now each client sends a whole 16,383-byte frame and a lone 0x82, in one write.
    let mut out = frame(true, 2, &[0x3c; 16_375], MASK);
    assert_eq!(out.len(), 16_383);
    out.push(0x82);
    for s in conns.iter_mut() {
        s.write_all(&out).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got_first.load(std::sync::atomic::Ordering::Relaxed) < CONNS {
        assert!(
            Instant::now() < deadline,
            "the app got {} of {CONNS} client frames",
            got_first.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in conns.iter_mut() {
        let f = timeout(WAIT, read_frame(s))
            .await
            .expect("the app's frame in time")
            .unwrap();
        assert_eq!((f.opcode, f.payload.len()), (2, 16_379));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_use = proxy.metric("wsdrain_relay_buffers_in_use").await;
    let rss_mid_header = proxy.rss_kib();
    eprintln!(
        "{CONNS} idle connections: VmRSS {rss_plain} KiB plain, {rss_mid_header} KiB each stopped \
         mid-header both ways; wsdrain_relay_buffers_in_use {in_use}"
    );
    assert_eq!(
        in_use, 0,
        "{in_use} pool buffers held by {CONNS} idle connections stopped mid-header"
    );
    // The rest of each header arrives: the frames complete, byte for byte.
    for (i, s) in conns.iter_mut().enumerate().step_by(100) {
        let text = format!("n{i}");
        let mut rest = frame(true, 2, text.as_bytes(), Some([9, 8, 7, 6]));
        rest.remove(0); // the 0x82 went ahead
        s.write_all(&rest).await.unwrap();
        let f = timeout(WAIT, read_frame(s))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!((f.fin, f.opcode, &f.payload[..]), (true, 2, &b"hello"[..]));
        let f = timeout(WAIT, read_frame(s))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!((f.opcode, f.payload), (2, text.into_bytes()));
    }
    drop(conns);
    proxy.wait_active(0).await;
    assert_eq!(proxy.metric("wsdrain_relay_buffers_in_use").await, 0);
    proxy.assert_sound();
}

/// The same for a control frame cut short (a ping's header and half its payload, the
/// longest tail that can wait): no buffer held while idle, the ping whole at the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_control_frame_pins_no_buffer() {
    let (mut proxy, _seen, mut healthy) = setup(&[]).await;
    let mut s = raw_ws(proxy.listen, "/echo").await;
    let payload = [0x42u8; 125];
    let ping = frame(true, 9, &payload, MASK);
    s.write_all(&ping[..ping.len() - 60]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let in_use = proxy.metric("wsdrain_relay_buffers_in_use").await;
        if in_use == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{in_use} buffers held by idle connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.write_all(&ping[ping.len() - 60..]).await.unwrap();
    let f = timeout(WAIT, read_frame(&mut s))
        .await
        .expect("pong in time")
        .unwrap();
    assert_eq!((f.opcode, &f.payload[..]), (10, &payload[..]));
    echo_roundtrip(&mut s, "after the ping").await;
    healthy.check(&proxy).await;
    proxy.assert_sound();
}

/// A connection that sent `PROXY ` and waits costs nothing while it waits: 300
/// of them idle for 3 s and the proxy uses well under 10 % of a core. Then one of them
/// finishes its header and is served with the address it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_proxy_header_costs_no_cpu() {
    let (app, heads) = start_capture_app().await;
    let mut proxy = Proxy::start(
        app,
        &["--accept-proxy-protocol", "--handshake-timeout", "20s"],
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        s.write_all(b"PROXY ").await.unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_secs(&proxy);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_secs(&proxy) - before;
    let share = used / t.elapsed().as_secs_f64();
    assert!(
        share < 0.10,
        "300 connections waiting inside a PROXY header cost {:.0} % of a core",
        share * 100.0
    );
    let mut s = conns.pop().unwrap();
    s.write_all(b"TCP4 203.0.113.9 10.0.0.1 4000 80\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s, WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"));
    assert_eq!(heads.header(0, "x-forwarded-for"), vec!["203.0.113.9"]);
    eprintln!(
        "300 idle partial PROXY headers: {:.1} % of a core",
        share * 100.0
    );
    proxy.assert_sound();
}
