//! TLS for the bench's own client side and the TLS-terminating contenders: one
//! self-signed certificate for `localhost` per bench process, the files each contender
//! reads (wsdrain's `--tls-dir`, HAProxy's combined PEM), and a `wss://` connect.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::frames::read_head;
use super::process::addr;

/// The bench's certificate on disk and a client configuration that trusts it.
pub struct BenchTls {
    /// Holds `tls.crt` and `tls.key` (wsdrain `--tls-dir`) and `combined.pem` (HAProxy).
    pub dir: PathBuf,
    config: Arc<rustls::ClientConfig>,
}

/// The bench's certificate, made on first use.
pub fn bench_tls() -> &'static BenchTls {
    static TLS: OnceLock<BenchTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let dir = std::env::temp_dir().join(format!("wsdrain-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tls dir");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        std::fs::write(dir.join("tls.crt"), &cert_pem).expect("write cert");
        std::fs::write(dir.join("tls.key"), &key_pem).expect("write key");
        std::fs::write(dir.join("combined.pem"), format!("{cert_pem}{key_pem}"))
            .expect("write combined");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        BenchTls {
            dir,
            config: Arc::new(config),
        }
    })
}

/// [`super::ws_connect`] over TLS: the handshake, then the upgrade inside it.
pub async fn wss_connect(port: u16) -> std::io::Result<(TlsStream<TcpStream>, Vec<u8>)> {
    let tcp = TcpStream::connect(addr(port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut sock = TlsConnector::from(bench_tls().config.clone())
        .connect(name, tcp)
        .await?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // A TLS stream may keep written bytes in its buffer until flushed; unflushed, the
    // request can sit in the client while the proxy waits for it (HAProxy answered 408
    // after its 60 s client timeout).
    sock.write_all(req.as_bytes()).await?;
    sock.flush().await?;
    let (head, rest) = read_head(&mut sock).await?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok((sock, rest))
}

/// [`super::wait_ready`] over TLS: an echo round trip through `port` works.
pub async fn wait_ready_tls(port: u16, what: &str) {
    use std::time::{Duration, Instant};
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), probe_tls(port)).await {
            return;
        }
        if Instant::now() > end {
            panic!("{what} on port {port} did not come up within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probe_tls(port: u16) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let (mut s, _) = wss_connect(port).await?;
    s.write_all(&super::client_frame(16)).await?;
    s.flush().await?;
    let mut back = vec![0u8; super::echo_len(16)];
    s.read_exact(&mut back).await.map(|_| ())
}
