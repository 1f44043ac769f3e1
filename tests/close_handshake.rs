//! Close handshakes that wsdrain starts (a drain's 1012) meeting peers that do not
//! follow the script: every close frame gets exactly one answer, and the app always
//! gets a close frame before its TCP connection ends.

mod common;
mod hostile_support;

use std::time::Duration;

use hostile_support::frame_log::{FrameLog, start_logging_app};
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A proxy in front of the logging app that drains at once when asked, and one client
/// that has sent `hello` and seen it reach the app.
async fn connected() -> (Proxy, FrameLog, TcpStream) {
    let (app, log) = start_logging_app().await;
    let proxy = Proxy::start(
        app,
        &[
            "--drain-delay",
            "0s",
            "--drain-window",
            "0s",
            "--close-timeout",
            "5s",
        ],
    )
    .await;
    let mut s = raw_ws(proxy.listen, "/log").await;
    s.write_all(&client_text("hello")).await.expect("hello");
    let deadline = std::time::Instant::now() + WAIT;
    while !log.events().contains(&"text hello".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "hello never reached the app"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proxy, log, s)
}

/// Starts the drain over the admin port and returns the close frame the client got.
async fn drain_and_read_close(proxy: &Proxy, s: &mut TcpStream) -> RxFrame {
    let (status, body) = common::http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("POST /drain");
    assert!((200..300).contains(&status), "POST /drain: {status} {body}");
    read_until_close(s, WAIT)
        .await
        .expect("no close frame from the drain")
}

/// A client that answers the drain's close with a bare FIN (no close frame): the app
/// still gets a masked close 1001 before its EOF, as it would from a client that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_fin_after_our_close_still_closes_the_app() {
    let (mut proxy, log, mut s) = connected().await;
    let close = drain_and_read_close(&proxy, &mut s).await;
    assert_eq!(close.close_code(), Some(1012));
    s.shutdown().await.expect("fin");
    assert!(closed_within(&mut s, WAIT).await, "client not closed");
    assert_eq!(log.until_eof().await, ["text hello", "close 1001", "eof"]);
    proxy.assert_sound();
}

/// The app starts its own close while the drain's close to the client waits for its
/// reply: the app's close is answered (1001) instead of being taken for the reply to
/// ours, the client's reply still ends the client side, and each side gets exactly one
/// close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_close_during_a_drain_gets_its_own_answer() {
    let (mut proxy, log, mut s) = connected().await;
    let close = drain_and_read_close(&proxy, &mut s).await;
    assert_eq!(close.close_code(), Some(1012));
    // Frames the client sends before its reply still reach the app: this one makes the
    // app start its own close.
    s.write_all(&client_text("close now")).await.expect("text");
    let deadline = std::time::Instant::now() + WAIT;
    while log.events().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the app saw only {:?}",
            log.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(&frame(true, 8, &1012u16.to_be_bytes(), MASK))
        .await
        .expect("close reply");
    let mut rest = Vec::new();
    timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("client side ended in time")
        .expect("read");
    assert!(
        rest.is_empty(),
        "the client got {} more bytes after our close",
        rest.len()
    );
    assert_eq!(
        log.until_eof().await,
        ["text hello", "text close now", "close 1001", "eof"]
    );
    proxy.assert_sound();
}

/// A client that answers our close but then keeps its TCP socket open (no FIN): once
/// the handshake is over it is let go after a short bound, not `--close-timeout`, and
/// counted as `fin_timeout`, apart from real close timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_fin_is_let_go_soon() {
    let (app, log) = start_logging_app().await;
    let mut proxy = Proxy::start(
        app,
        &[
            "--drain-delay",
            "0s",
            "--drain-window",
            "0s",
            "--close-timeout",
            "20s",
        ],
    )
    .await;
    let mut s = raw_ws(proxy.listen, "/log").await;
    proxy.wait_active(1).await;
    let close = drain_and_read_close(&proxy, &mut s).await;
    assert_eq!(close.close_code(), Some(1012));
    s.write_all(&frame(true, 8, &1012u16.to_be_bytes(), MASK))
        .await
        .expect("close reply");
    assert!(closed_within(&mut s, WAIT).await, "no FIN from wsdrain");
    // `s` stays open: no FIN from the client.
    let started = std::time::Instant::now();
    proxy.wait_active(0).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "held {:?} after the handshake",
        started.elapsed()
    );
    assert_eq!(log.until_eof().await, ["close 1001", "eof"]);
    assert_eq!(proxy.errors("close_timeout").await, 0);
    assert_eq!(proxy.errors("fin_timeout").await, 1);
    drop(s);
    proxy.assert_sound();
}
