//! `--mode tcp` half-close: a side that has finished sending (FIN) still receives
//! everything the other side sends, however long that takes. The half-close is passed
//! on, and the connection stays until both sides are done; `--close-timeout` bounds
//! only closes that wsdrain starts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Bytes streamed after the half-close, in `CHUNKS` pieces spread over `STREAM_FOR`:
/// well past the `--close-timeout` of 1 s the tests run with.
const TOTAL: usize = 16 * 1024;
const CHUNKS: usize = 16;
const STREAM_FOR: Duration = Duration::from_secs(3);

/// Writes `TOTAL` bytes in `CHUNKS` pieces, pausing between them.
async fn stream_slowly<W: AsyncWriteExt + Unpin>(w: &mut W) -> std::io::Result<()> {
    let piece = vec![0x5au8; TOTAL / CHUNKS];
    for _ in 0..CHUNKS {
        w.write_all(&piece).await?;
        tokio::time::sleep(STREAM_FOR / CHUNKS as u32).await;
    }
    Ok(())
}

/// An app that reads the request until the client's FIN, then answers slowly.
async fn answers_after_fin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await?;
                stream_slowly(&mut s).await?;
                s.shutdown().await
            });
        }
    });
    addr
}

/// A client sends its request, half-closes, and reads a long answer: all of it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_keeps_the_answer_coming() {
    let app = answers_after_fin().await;
    let proxy = Proxy::start(app, &["--mode", "tcp", "--close-timeout", "1s"]).await;
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(b"GET everything\n").await.expect("request");
    s.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    timeout(Duration::from_secs(20), s.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(answer.len(), TOTAL, "bytes of the answer after our FIN");
    assert_eq!(
        proxy
            .metric(r#"websocket_errors_total{kind="close_timeout"}"#)
            .await,
        0.0
    );
}

/// The other way round: the app says all it has and half-closes; the client keeps
/// sending for longer than the close timeout, and the app receives every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_half_close_keeps_the_upload_coming() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = listener.local_addr().expect("addr");
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"ready\n").await.expect("greeting");
        s.shutdown().await.expect("half-close");
        let mut upload = Vec::new();
        let read = s.read_to_end(&mut upload).await;
        let _ = got_tx.send(read.map(|_| upload.len()));
    });
    let proxy = Proxy::start(app, &["--mode", "tcp", "--close-timeout", "1s"]).await;
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    let mut greeting = Vec::new();
    timeout(Duration::from_secs(10), s.read_to_end(&mut greeting))
        .await
        .expect("the app's FIN in time")
        .expect("read");
    assert_eq!(greeting, b"ready\n");
    stream_slowly(&mut s).await.expect("upload");
    s.shutdown().await.expect("fin");
    let got = timeout(Duration::from_secs(20), got_rx)
        .await
        .expect("the app saw the end in time")
        .expect("app task");
    assert_eq!(got.expect("app read"), TOTAL, "bytes the app received");
}
