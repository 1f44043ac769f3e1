//! Edges of the relay's close choreography and liveness, over real sockets: a real
//! `wsdrain proxy` process between a raw client and a raw app that the test drives byte
//! by byte, so each test can stop either side at the exact byte it needs (mid-frame,
//! between fragments, inside a header). Every wait is bounded.

mod common;
mod hostile_support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// An app that answers every upgrade with a 101 and hands the raw socket to the test,
/// which then plays the app frame by frame.
async fn handover_app() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let addr = listener.local_addr().expect("app addr");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // Byte by byte, so frames right behind the head stay in the socket.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let key = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if s.write_all(resp.as_bytes()).await.is_ok() {
                    let _ = tx.send(s).await;
                }
            });
        }
    });
    (addr, rx)
}

/// Opens a client through the proxy and returns (client, app) sockets.
async fn pair(proxy: &Proxy, apps: &mut mpsc::Receiver<TcpStream>) -> (TcpStream, TcpStream) {
    let client = raw_ws(proxy.listen, "/").await;
    let app = timeout(WAIT, apps.recv())
        .await
        .expect("the app saw the upgrade in time")
        .expect("app socket");
    (client, app)
}

/// `POST /shed?count=1` on the admin port: one scheduled close, as a drain would send.
async fn shed_one(proxy: &Proxy) {
    let resp = http_raw(
        proxy.admin,
        b"POST /shed?count=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .expect("shed");
    assert!(resp.starts_with("HTTP/1.1 202"), "shed refused: {resp}");
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Issue 12 item 3: the app stops in the middle of a frame, so wsdrain's scheduled close
/// can never be put on the wire. After the message-boundary wait the close timeout must
/// still end the connection (it used to hang forever: the linger timer was installed
/// but never polled, so nothing woke the task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_of_an_app_stalled_mid_frame_is_bounded_by_close_timeout() {
    let (app_addr, mut apps) = handover_app().await;
    let proxy = Proxy::start(app_addr, &["--drain-window", "0", "--close-timeout", "1s"]).await;
    let (mut client, mut app) = pair(&proxy, &mut apps).await;

    // A binary frame announcing 1000 bytes, 10 of them sent, then silence.
    let mut partial = vec![0x82, 0x7e, 0x03, 0xe8];
    partial.extend_from_slice(&[7u8; 10]);
    app.write_all(&partial).await.expect("app writes");
    let mut got = [0u8; 14];
    timeout(WAIT, client.read_exact(&mut got))
        .await
        .expect("the partial frame reached the client in time")
        .expect("read");
    assert_eq!(&got[..], &partial[..]);

    shed_one(&proxy).await;
    let t0 = Instant::now();
    assert!(
        closed_within(&mut client, Duration::from_secs(5)).await,
        "the connection was still open 5 s after a close with --close-timeout 1s"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the close timeout: the frame was cut"
    );
    assert_eq!(proxy.errors("close_timeout").await, 1);
    proxy.wait_active(0).await;
    drop(app);
}

/// Issue 12 item 4: the app closes while wsdrain's scheduled close waits for the end of
/// a fragmented message. The app's close was first, so it is the only close the client
/// gets, and the client's reply reaches the app (it used to be followed by wsdrain's
/// 1012 ~200 ms later, the client's reply swallowed and the app sent 1001 instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_close_during_the_boundary_wait_is_the_only_close() {
    let (app_addr, mut apps) = handover_app().await;
    let proxy = Proxy::start(app_addr, &["--drain-window", "0", "--close-timeout", "3s"]).await;
    let (mut client, mut app) = pair(&proxy, &mut apps).await;

    app.write_all(&frame(false, 1, b"part-", None))
        .await
        .expect("app writes");
    let f = timeout(WAIT, read_frame(&mut client))
        .await
        .expect("first fragment in time")
        .expect("frame");
    assert_eq!((f.fin, f.opcode), (false, 1));

    shed_one(&proxy).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The close is a control frame: allowed between fragments (RFC 6455 §5.4).
    app.write_all(&frame(true, 8, &close_payload(1000, "app bye"), None))
        .await
        .expect("app closes");
    let f = timeout(WAIT, read_frame(&mut client))
        .await
        .expect("the app's close in time")
        .expect("frame");
    assert_eq!((f.opcode, f.close_code()), (8, Some(1000)));

    // Well past the 200 ms boundary wait: nothing more may come before the reply.
    match timeout(Duration::from_millis(600), read_frame(&mut client)).await {
        Err(_) => {}
        Ok(Ok(f)) => panic!(
            "a second frame after the app's close: opcode {} code {:?} payload {:?}",
            f.opcode,
            f.close_code(),
            String::from_utf8_lossy(&f.payload)
        ),
        Ok(Err(e)) => panic!("connection ended before the client could answer: {e}"),
    }
    client
        .write_all(&frame(true, 8, &close_payload(1000, ""), MASK))
        .await
        .expect("client answers");
    let f = timeout(WAIT, read_frame(&mut app))
        .await
        .expect("the client's reply reached the app in time")
        .expect("frame");
    assert_eq!(
        (f.opcode, f.close_code()),
        (8, Some(1000)),
        "the app must get the client's reply, not a close of wsdrain's own"
    );
    drop(app);
    assert!(closed_within(&mut client, WAIT).await, "client not closed");
    drop(client);
    proxy.wait_active(0).await;
    assert_eq!(
        proxy
            .metric("websocket_close_total{code=\"1000\",initiator=\"app\"}")
            .await,
        1
    );
    assert_eq!(proxy.errors("close_timeout").await, 0);
}

/// The mirror of the test above: the client closes while the scheduled close waits for
/// the app's fragmented message to end. The app's reply is the one close the client gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_during_the_boundary_wait_gets_only_the_apps_reply() {
    let (app_addr, mut apps) = handover_app().await;
    let proxy = Proxy::start(app_addr, &["--drain-window", "0", "--close-timeout", "3s"]).await;
    let (mut client, mut app) = pair(&proxy, &mut apps).await;

    app.write_all(&frame(false, 2, b"part-", None))
        .await
        .expect("app writes");
    let f = timeout(WAIT, read_frame(&mut client))
        .await
        .expect("first fragment in time")
        .expect("frame");
    assert_eq!((f.fin, f.opcode), (false, 2));

    shed_one(&proxy).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .write_all(&frame(true, 8, &close_payload(1000, "client bye"), MASK))
        .await
        .expect("client closes");
    let f = timeout(WAIT, read_frame(&mut app))
        .await
        .expect("the client's close reached the app in time")
        .expect("frame");
    assert_eq!((f.opcode, f.close_code()), (8, Some(1000)));
    // The app answers only after the boundary wait is over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.write_all(&frame(true, 8, &close_payload(1000, "app reply"), None))
        .await
        .expect("app answers");
    let f = timeout(WAIT, read_frame(&mut client))
        .await
        .expect("a close in time")
        .expect("frame");
    assert_eq!(
        (
            f.opcode,
            f.close_code(),
            String::from_utf8_lossy(&f.payload[2..]).into_owned()
        ),
        (8, Some(1000), "app reply".to_string()),
        "the client must get the app's reply as its only close"
    );
    drop(app);
    match timeout(WAIT, read_frame(&mut client)).await {
        Ok(Ok(f)) => panic!(
            "a second close to the client: opcode {} code {:?}",
            f.opcode,
            f.close_code()
        ),
        Ok(Err(_)) => {}
        Err(_) => panic!("client not closed"),
    }
    proxy.wait_active(0).await;
}

/// Issue 12 item 5: a client reading one large frame slowly is alive; wsdrain's ping
/// waits behind the frame, and the ping timeout only starts once the ping is written.
/// (It used to start when the ping was queued, so the client was cut mid-frame without
/// ever having been pinged.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_of_a_large_frame_is_pinged_after_it_not_cut() {
    let (app_addr, mut apps) = handover_app().await;
    let proxy = Proxy::start(
        app_addr,
        &[
            "--ping-interval",
            "300ms",
            "--ping-timeout",
            "3s",
            "--close-timeout",
            "1s",
        ],
    )
    .await;
    // A fixed receive buffer keeps the client's reading pace the pace of the transfer.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let mut client = socket.connect(proxy.listen).await.expect("connect");
    upgrade(&mut client).await;
    let mut app = timeout(WAIT, apps.recv())
        .await
        .expect("app in time")
        .expect("app socket");

    // Larger than what the kernel buffers between wsdrain and the client can hold (a
    // few MiB), so wsdrain's own ping waits behind the frame for seconds.
    const SIZE: usize = 32 << 20;
    let big = frame(true, 2, &vec![0x5a; SIZE], None);
    let total = big.len();
    let writer = tokio::spawn(async move {
        app.write_all(&big).await.expect("app writes the frame");
        app
    });
    // At most 64 KiB per 10 ms: 32 MiB take over 5 s, well past the 3 s ping timeout
    // counted from the first ping's queueing (300 ms in), while ~4 MiB of kernel buffer
    // behind the ping take the client under a second.
    let t0 = Instant::now();
    // On a loaded machine the app may start writing after the first ping is due: such a
    // ping comes before the frame and is answered, as any client would.
    loop {
        let mut h = [0u8; 2];
        timeout(WAIT, client.read_exact(&mut h))
            .await
            .expect("the frame's header in time")
            .expect("read");
        if h[0] != 0x89 {
            assert_eq!(h, [0x82, 127], "a binary frame, 64-bit length");
            break;
        }
        let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
        client.read_exact(&mut p).await.expect("ping payload");
        client
            .write_all(&frame(true, 10, &p, MASK))
            .await
            .expect("pong");
    }
    let mut got = 2usize;
    let mut chunk = vec![0u8; 64 * 1024];
    while got < total {
        let want = chunk.len().min(total - got);
        match timeout(WAIT, client.read(&mut chunk[..want])).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "cut after {got} of {total} bytes, {:?} into the frame",
                t0.elapsed()
            ),
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("stalled after {got} of {total} bytes"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() > Duration::from_secs(4),
        "read in {:?}: too fast to test",
        t0.elapsed()
    );
    let f = timeout(WAIT, read_frame(&mut client))
        .await
        .expect("a ping after the frame")
        .expect("frame");
    assert_eq!((f.opcode, &f.payload[..]), (9, &b"wsdrain"[..]));
    client
        .write_all(&frame(true, 10, &f.payload, MASK))
        .await
        .expect("pong");
    client
        .write_all(&client_text("still here"))
        .await
        .expect("text");
    let mut app = timeout(WAIT, writer).await.expect("writer").expect("app");
    let f = timeout(WAIT, read_frame(&mut app))
        .await
        .expect("the text reached the app")
        .expect("frame");
    assert_eq!(
        (f.opcode, &f.payload[..]),
        (1, &b"still here"[..]),
        "the pong answering wsdrain's ping is not the app's business"
    );
    assert_eq!(proxy.errors("ping_timeout").await, 0);
}

/// The upgrade request on an already connected socket, up to the 101.
async fn upgrade(s: &mut TcpStream) {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!("no 101 ({other:?}): {}", String::from_utf8_lossy(&head)),
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "no 101");
}

/// Issue 12 item 8: `--log-format text` to a pipe (kubectl logs, files) carries no ANSI
/// colour codes; they are for terminals only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let (app_addr, _seen) = start_app().await;
    let (mut child, _listen, _admin) = common::spawn_proxy(common::Launch {
        upstream: app_addr,
        extra: &["--log-format", "text"],
        log_level: "info",
        nofile: None,
        stderr: Stdio::piped(),
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr pipe")
        .read_to_string(&mut log)
        .expect("read the log");
    assert!(log.contains("INFO"), "no info line logged: {log:?}");
    assert!(
        !log.contains("\x1b["),
        "colour codes in a piped log: {:?}",
        log.lines().next()
    );
}
