//! TLS termination over real sockets: `wss://` clients (tokio-tungstenite over a rustls
//! client) through a real `wsdrain proxy` process serving a certificate from a
//! directory laid out like a mounted Kubernetes Secret (`..data` symlink swapped on
//! update). The drain, a rotation under open connections, a bad rotation, hostile
//! handshakes, PROXY protocol in front of TLS and TLS in `--mode tcp`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients::hint_of;
use common::*;
use futures_util::{SinkExt, StreamExt};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost` and its key, PEM.
struct Pair {
    cert: String,
    key: String,
}

impl Pair {
    fn new() -> Pair {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["localhost".into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).expect("der")
    }
}

/// A directory laid out like a mounted Secret: `tls.crt -> ..data/tls.crt`, and
/// `..data -> ..<version>`; [`SecretDir::update`] swaps `..data` atomically.
struct SecretDir {
    root: PathBuf,
    version: u32,
}

impl SecretDir {
    fn new(name: &str, pair: &Pair) -> SecretDir {
        let root = std::env::temp_dir().join(format!("wsdrain-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("dir");
        let mut dir = SecretDir { root, version: 0 };
        dir.update(&pair.cert, &pair.key);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(f), dir.root.join(f))
                .expect("symlink");
        }
        dir
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let version = self.root.join(&name);
        std::fs::create_dir_all(&version).expect("version dir");
        std::fs::write(version.join("tls.crt"), cert).expect("cert");
        std::fs::write(version.join("tls.key"), key).expect("key");
        let tmp = self.root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
    }

    fn arg(&self) -> &str {
        self.root.to_str().expect("utf8")
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A client configuration trusting exactly `certs`.
fn client_config(certs: &[&Pair]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for p in certs {
        roots.add(p.der()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// TLS handshake to `addr` (after `before`, e.g. a PROXY header), then the certificate
/// the server presented.
async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    before: &[u8],
) -> std::io::Result<(TlsStream<TcpStream>, Vec<u8>)> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(before).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    Ok((tls, presented))
}

/// A `wss://` WebSocket through the proxy, and the certificate it was served.
async fn wss(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> (Wss, Vec<u8>) {
    let (tls, presented) = tls_connect(addr, config, b"").await.expect("TLS handshake");
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls)
        .await
        .expect("WebSocket over TLS");
    (ws, presented)
}

async fn echo(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time");
    match got {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_over_tls_sends_1012_with_a_hint_then_close_notify() {
    let pair = Pair::new();
    let dir = SecretDir::new("drain", &pair);
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--tls-dir",
            dir.arg(),
            "--drain-delay",
            "100ms",
            "--drain-window",
            "1s",
        ],
    )
    .await;
    let config = client_config(&[&pair]);
    let mut clients = Vec::new();
    for i in 0..20 {
        let (mut ws, _) = wss(proxy.listen, &config).await;
        echo(&mut ws, &format!("hello {i}")).await;
        clients.push(ws);
    }
    proxy.signal("TERM");
    for (i, mut ws) in clients.into_iter().enumerate() {
        let frame = loop {
            match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("client {i}: expected a close frame, got {other:?}"),
            }
        };
        let frame = frame.expect("a close code");
        assert_eq!(u16::from(frame.code), 1012, "client {i}");
        assert!(
            hint_of(&frame.reason).is_some(),
            "client {i}: {:?}",
            frame.reason
        );
        // tungstenite answers the close; the proxy then ends TLS properly.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        }
        let mut rest = [0u8; 16];
        let end = tokio::time::timeout(Duration::from_secs(10), ws.get_mut().read(&mut rest))
            .await
            .expect("the end of the stream in time");
        assert!(
            matches!(end, Ok(0)),
            "client {i}: expected close_notify then EOF, got {end:?}"
        );
    }
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_open_connections_and_new_handshakes_get_the_new_cert() {
    let old = Pair::new();
    let new = Pair::new();
    let mut dir = SecretDir::new("rotate", &old);
    let app = EchoApp::start().await;
    let config = client_config(&[&old, &new]);
    // 200 by default; the full count is WSDRAIN_ROTATION_CONNS=2000.
    let n = std::env::var("WSDRAIN_ROTATION_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize);
    let proxy_flags = ["--tls-dir", dir.arg(), "--max-connections", "5000"];
    let proxy = Proxy::start(app.addr, &proxy_flags).await;
    let mut open = Vec::new();
    for _ in 0..n {
        let (ws, presented) = wss(proxy.listen, &config).await;
        assert_eq!(presented, old.der().to_vec());
        open.push(ws);
    }
    dir.update(&new.cert, &new.key);
    let swapped = Instant::now();
    loop {
        let (_, presented) = tls_connect(proxy.listen, &config, b"")
            .await
            .expect("handshake");
        if presented == new.der().to_vec() {
            break;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(5),
            "new handshakes still get the old certificate 5 s after the swap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = swapped.elapsed();
    for (i, ws) in open.iter_mut().enumerate() {
        echo(ws, &format!("still here {i}")).await;
    }
    println!(
        "{n} open connections kept through the rotation; new handshakes got the new certificate {took:?} after the swap"
    );
    assert_eq!(proxy.metric("wsdrain_tls_reload_errors_total").await, 0.0);
    assert!(proxy.metric("wsdrain_tls_cert_not_after_seconds").await > 1e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rotation_keeps_the_old_certificate() {
    let old = Pair::new();
    let other = Pair::new();
    let mut dir = SecretDir::new("bad", &old);
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--tls-dir", dir.arg()]).await;
    let config = client_config(&[&old, &other]);
    // The new certificate with the old key: rustls refuses the pair.
    dir.update(&other.cert, &old.key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.metric("wsdrain_tls_reload_errors_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the bad pair was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut ws, presented) = wss(proxy.listen, &config).await;
    assert_eq!(presented, old.der().to_vec(), "the old certificate stays");
    echo(&mut ws, "served").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        proxy.metric("wsdrain_tls_reload_errors_total").await,
        1.0,
        "one bad pair is counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_hellos_are_counted_and_never_crash_the_proxy() {
    let pair = Pair::new();
    let dir = SecretDir::new("hostile", &pair);
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(app.addr, &["--tls-dir", dir.arg()]).await;
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // A handshake record claiming a ClientHello, then nonsense.
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff,
        ],
        &[0x16, 0x03, 0x03, 0x00, 0x01, 0x00],
        &[0x16, 0x03, 0x01, 0x40, 0x01],
    ];
    for bytes in garbage {
        let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .metric("websocket_errors_total{kind=\"tls_handshake\"}")
        .await
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "malformed handshakes not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.child.try_wait().expect("status").is_none(),
        "proxy alive"
    );
    let (mut ws, _) = wss(proxy.listen, &client_config(&[&pair])).await;
    echo(&mut ws, "after the garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_handshake_times_out_and_is_counted() {
    let pair = Pair::new();
    let dir = SecretDir::new("timeout", &pair);
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &["--tls-dir", dir.arg(), "--tls-handshake-timeout", "500ms"],
    )
    .await;
    let mut s = TcpStream::connect(proxy.listen).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01])
        .await
        .expect("a partial record");
    let mut sink = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    assert!(ended.is_ok(), "the proxy dropped the silent handshake");
    let series = "websocket_errors_total{kind=\"tls_handshake_timeout\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.metric(series).await < 1.0 {
        assert!(Instant::now() < deadline, "the timeout was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.metric(series).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_header_comes_before_tls() {
    let pair = Pair::new();
    let dir = SecretDir::new("proxyproto", &pair);
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &["--tls-dir", dir.arg(), "--accept-proxy-protocol"],
    )
    .await;
    let config = client_config(&[&pair]);
    let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
    let (tls, _) = tls_connect(proxy.listen, &config, header)
        .await
        .expect("TLS after PROXY");
    let url = format!("wss://localhost:{}/", proxy.listen.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("ws");
    echo(&mut ws, "behind a balancer").await;
    let seen = app.seen.lock().expect("lock");
    let headers = seen.headers.last().expect("the upgrade reached the app");
    let xff = headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.as_str());
    assert_eq!(xff, Some("203.0.113.7"));
}

/// A plain TCP echo app for `--mode tcp`.
async fn tcp_echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_mode_terminates_tls_and_a_drain_ends_with_close_notify() {
    let pair = Pair::new();
    let dir = SecretDir::new("tcp", &pair);
    let app = tcp_echo().await;
    let mut proxy = Proxy::start(
        app,
        &[
            "--mode",
            "tcp",
            "--tls-dir",
            dir.arg(),
            "--drain-delay",
            "100ms",
            "--drain-window",
            "500ms",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let config = client_config(&[&pair]);
    let (mut tls, _) = tls_connect(proxy.listen, &config, b"")
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "no ALPN in TCP mode");
    tls.write_all(b"ping over tls").await.expect("write");
    let mut buf = [0u8; 13];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"ping over tls");
    proxy.signal("TERM");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("the drain ended the stream");
    assert!(
        end.is_ok(),
        "expected close_notify before the FIN, got {end:?}"
    );
    let _ = tls.shutdown().await;
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Resident KiB a proxy grows by per connection once `n` connections sit idle.
async fn idle_growth(proxy: &Proxy, n: usize, before: u64) -> f64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(proxy.child.id()).saturating_sub(before) as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_wss_socket_costs_at_most_4_kib_more_than_an_idle_ws_socket() {
    let n = std::env::var("WSDRAIN_IDLE_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300usize);
    let app = EchoApp::start().await;
    let pair = Pair::new();
    let dir = SecretDir::new("idle", &pair);
    let config = client_config(&[&pair]);
    let tls_proxy = Proxy::start(
        app.addr,
        &["--tls-dir", dir.arg(), "--max-connections", "5000"],
    )
    .await;
    // One connection first, so the process's one-time costs are behind the baseline.
    let (mut warm, _) = wss(tls_proxy.listen, &config).await;
    echo(&mut warm, "warm").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(tls_proxy.child.id());
    let mut sockets = Vec::new();
    for i in 0..n {
        let (mut ws, _) = wss(tls_proxy.listen, &config).await;
        // A message each way: every buffer a busy connection uses has been used once.
        echo(&mut ws, &format!("hello {i}")).await;
        sockets.push(ws);
    }
    let wss_kib = idle_growth(&tls_proxy, n, before).await;
    drop((sockets, warm));

    let plain_proxy = Proxy::start(app.addr, &["--max-connections", "5000"]).await;
    let (mut warm, _) = tokio_tungstenite::connect_async(plain_proxy.url("/"))
        .await
        .expect("ws");
    warm.send(Message::text("warm")).await.expect("send");
    let _ = warm.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(plain_proxy.child.id());
    let mut sockets = Vec::new();
    for i in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(plain_proxy.url("/"))
            .await
            .expect("ws");
        ws.send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
        sockets.push(ws);
    }
    let ws_kib = idle_growth(&plain_proxy, n, before).await;
    println!("idle per connection over {n}: wss {wss_kib:.1} KiB, ws {ws_kib:.1} KiB");
    // rustls' buffered session kept a 4 KiB read buffer for a connection's whole life
    // (7 KiB over ws:// in all); the unbuffered one holds bytes only while they move.
    assert!(
        wss_kib <= ws_kib + 4.0,
        "an idle wss:// socket costs {wss_kib:.1} KiB, an idle ws:// one {ws_kib:.1} KiB"
    );
    assert!(ws_kib > 0.0, "the ws:// side was measured");
}
