//! The staggered drain over real sockets and real signals: thousands of clients, the
//! kubelet's termination orders, and the edge cases around them.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EchoApp, Proxy, free_port, http, http_full};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// What one client lived through.
#[derive(Debug, Default)]
struct ClientReport {
    /// Messages sent before the close frame arrived.
    sent: Vec<String>,
    /// Close code and reason received.
    close: Option<(u16, String)>,
    /// When the close frame arrived.
    close_at: Option<Instant>,
    /// A read error (reset, protocol error) instead of a clean close.
    error: Option<String>,
}

/// Connects, then sends `id-seq` every `every` until a close frame arrives; returns
/// once the connection has ended.
async fn client(
    url: String,
    id: usize,
    every: Duration,
    ready: Arc<tokio::sync::Barrier>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let (mut ws, _) = match connect_async(url).await {
        Ok(pair) => pair,
        Err(e) => {
            report.error = Some(format!("connect: {e}"));
            ready.wait().await;
            return report;
        }
    };
    ready.wait().await;
    // Random phase so 2,000 clients do not send in lockstep.
    let phase = Duration::from_millis((id as u64 * 7919) % every.as_millis().max(1) as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick(), if report.close.is_none() => {
                let text = format!("{id}-{seq}");
                seq += 1;
                if ws.send(Message::text(text.clone())).await.is_ok() {
                    report.sent.push(text);
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => {
                    report.close_at = Some(Instant::now());
                    report.close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((0, String::new())));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if report.close.is_none() {
                        report.error = Some(e.to_string());
                    }
                    break;
                }
                None => break,
            }
        }
    }
    report
}

fn hint_of(reason: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(reason).ok()?;
    v.get("reconnect_after_ms")?.as_u64()
}

async fn connect_clients(
    proxy: &Proxy,
    n: usize,
    every: Duration,
) -> Vec<tokio::task::JoinHandle<ClientReport>> {
    let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        tasks.push(tokio::spawn(client(
            proxy.url("/"),
            id,
            every,
            ready.clone(),
        )));
        if id % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .expect("clients connected in time");
    tasks
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<ClientReport>>,
    within: Duration,
) -> Vec<ClientReport> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(within, t)
                .await
                .expect("client ended in time")
                .expect("client task"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_are_closed_evenly_with_hints_and_nothing_is_lost() {
    const N: usize = 2000;
    let delay = Duration::from_secs(1);
    let window = Duration::from_secs(4);
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "1s",
            "--drain-window",
            "4s",
            "--close-timeout",
            "3s",
            "--reconnect-jitter",
            "2s",
            "--max-connections",
            "5000",
            // A loaded 2-core box can stall the test app's accept loop.
            "--connect-timeout",
            "10s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, N, Duration::from_millis(1000)).await;
    assert_eq!(proxy.metric("websocket_connections_active").await, N as f64);

    let t0 = Instant::now();
    proxy.signal("TERM");
    // Readiness is off within 100 ms of the trigger.
    loop {
        let (status, _) = http(proxy.admin, "GET", "/readyz", &[], b"")
            .await
            .expect("readyz");
        if status == 503 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "readyz still {status} after 100 ms"
        );
    }
    // During the announce phase upgrades are still served...
    let (early, _) = connect_async(proxy.url("/"))
        .await
        .expect("upgrade during announce");
    drop(early);
    // ...and during the stagger they get 503 + Retry-After + Connection: close.
    tokio::time::sleep_until((t0 + delay + Duration::from_millis(300)).into()).await;
    match connect_async(proxy.url("/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
            assert_eq!(
                resp.headers()
                    .get("connection")
                    .and_then(|v| v.to_str().ok()),
                Some("close")
            );
        }
        other => panic!("expected 503 during the stagger, got {other:?}"),
    }

    let reports = collect(tasks, Duration::from_secs(20)).await;
    let code = proxy.wait_exit(Duration::from_secs(8));
    let exited_after = t0.elapsed();
    assert_eq!(code, Some(0), "exit code");
    assert!(
        exited_after <= delay + window + Duration::from_secs(3 + 1),
        "exited after {exited_after:?}"
    );

    // Every client: close 1012 with a hint in [0, 2000] ms, no reset.
    let mut errors = Vec::new();
    let mut close_times = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if let Some(e) = &r.error {
            errors.push(format!("client {i}: {e}"));
            continue;
        }
        let (code, reason) = r
            .close
            .clone()
            .unwrap_or_else(|| panic!("client {i} got no close frame"));
        assert_eq!(code, 1012, "client {i}");
        let hint =
            hint_of(&reason).unwrap_or_else(|| panic!("client {i}: reason {reason:?} has no hint"));
        assert!(hint <= 2000, "client {i}: hint {hint}");
        close_times.push(r.close_at.expect("time").duration_since(t0 + delay));
    }
    assert!(
        errors.is_empty(),
        "{} clients saw errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    // Even spread: each tenth of the window within 2x of an even share.
    let tenth = window / 10;
    let mut per_tenth = [0usize; 10];
    for t in &close_times {
        let slot = (t.as_secs_f64() / tenth.as_secs_f64()) as usize;
        per_tenth[slot.min(9)] += 1;
    }
    let share = N / 10;
    for (i, n) in per_tenth.iter().enumerate() {
        assert!(
            *n <= 2 * share && *n >= share / 2,
            "tenth {i}: {n} closes, even share {share}: {per_tenth:?}"
        );
    }

    // The app: a close 1001 for every connection, and every message sent before the
    // client saw its close frame arrived.
    let seen = app.seen.lock().expect("lock");
    let app_closes = seen
        .close_codes
        .iter()
        .filter(|c| **c == Some(1001))
        .count();
    assert!(
        app_closes >= N,
        "app saw {app_closes} close 1001 for {N} connections: {:?}",
        seen.close_codes
            .iter()
            .filter(|c| **c != Some(1001))
            .take(5)
            .collect::<Vec<_>>()
    );
    let received: HashSet<&str> = seen.texts.iter().map(String::as_str).collect();
    let mut lost = 0;
    for r in &reports {
        lost += r
            .sent
            .iter()
            .filter(|m| !received.contains(m.as_str()))
            .count();
    }
    let total_sent: usize = reports.iter().map(|r| r.sent.len()).sum();
    assert!(total_sent > N * 2, "clients sent {total_sent} messages");
    assert_eq!(
        lost, 0,
        "messages sent before the close that never reached the app"
    );
}

/// The Python echo app as a real process (the "app container").
struct AppProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl AppProcess {
    fn start() -> AppProcess {
        let port = free_port();
        let python = std::env::var("WSDRAIN_PYTHON").unwrap_or_else(|_| {
            let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
            if std::path::Path::new(venv).exists() {
                venv.to_string()
            } else {
                "python3".to_string()
            }
        });
        let child = Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/echo_server.py"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the python echo app (needs the `websockets` package: scripts/test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "python echo app did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        AppProcess { child, addr }
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_all_closed_by_schedule(reports: &[ClientReport], code: u16) {
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.error.is_none(),
            "client {i} lost its connection: {:?}",
            r.error
        );
        let (c, reason) = r
            .close
            .clone()
            .unwrap_or_else(|| panic!("client {i} got no close frame"));
        assert_eq!(c, code, "client {i}");
        assert!(hint_of(&reason).is_some(), "client {i}: {reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_sidecar_order_app_outlives_the_drain() {
    // Kubelet order for a native sidecar: the app's preStop (httpGet /prestop) runs
    // first and blocks; then SIGTERM to the app; the sidecar gets SIGTERM last.
    let app = AppProcess::start();
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "300ms",
            "--drain-window",
            "2s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 200, Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = http(proxy.admin, "GET", "/prestop", &[], b"")
        .await
        .expect("prestop");
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "prestop answered only after the window"
    );
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["phase"], "done");
    assert_eq!(status["open"], 0);
    assert_eq!(status["closed_by_schedule"], 200);
    // Only now does the kubelet stop the app, then the sidecar.
    app.signal("TERM");
    let reports = collect(tasks, Duration::from_secs(10)).await;
    assert_all_closed_by_schedule(&reports, 1012);
    // Drained over HTTP, the sidecar stays up (a native sidecar stops after the app)...
    assert_eq!(
        http(proxy.admin, "GET", "/healthz", &[], b"")
            .await
            .expect("healthz")
            .0,
        200
    );
    // ...and exits at once on its SIGTERM.
    let t = Instant::now();
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "exited after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_sidecar_order_prestop_and_sigterm_together() {
    // Classic sidecar: the app's preStop and the sidecar's SIGTERM start together; the
    // app gets SIGTERM when its preStop returns.
    let app = AppProcess::start();
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "300ms",
            "--drain-window",
            "2s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 200, Duration::from_millis(200)).await;
    let admin = proxy.admin;
    let prestop = tokio::spawn(async move { http(admin, "GET", "/prestop", &[], b"").await });
    proxy.signal("TERM");
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), prestop)
        .await
        .expect("in time")
        .expect("task")
        .expect("prestop");
    assert_eq!(status, 200);
    app.signal("TERM");
    let reports = collect(tasks, Duration::from_secs(10)).await;
    assert_all_closed_by_schedule(&reports, 1012);
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_closes_everything_at_once() {
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "200ms",
            "--drain-window",
            "60s",
            "--close-timeout",
            "5s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 100, Duration::from_millis(500)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    proxy.signal("TERM");
    let reports = collect(tasks, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "all closed after {:?}",
        t.elapsed()
    );
    for r in &reports {
        assert!(r.error.is_none() && r.close.is_some(), "{r:?}");
    }
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_command_waits_until_done() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "200ms",
            "--drain-window",
            "1s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 20, Duration::from_millis(200)).await;
    let out = tokio::task::spawn_blocking({
        let admin = format!("http://{}", proxy.admin);
        move || {
            Command::new(env!("CARGO_BIN_EXE_wsdrain"))
                .args(["drain", "--admin", &admin, "--wait"])
                .output()
                .expect("run wsdrain drain")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("json status on stdout");
    assert_eq!(status["phase"], "done");
    let reports = collect(tasks, Duration::from_secs(5)).await;
    assert_all_closed_by_schedule(&reports, 1012);
    // Triggering again is harmless.
    let (code, _) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("drain again");
    assert_eq!(code, 202);
    let (code, body) = http(proxy.admin, "GET", "/readyz", &[], b"")
        .await
        .expect("readyz");
    assert_eq!((code, body.trim()), (503, "draining"));
    // An unreachable admin port is one clear error line and exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_wsdrain"))
        .args([
            "drain",
            "--admin",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the sidecar admin port"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_killed_mid_stream_clients_get_a_close_frame_not_a_reset() {
    let app = AppProcess::start();
    let proxy = Proxy::start(app.addr, &["--reconnect-jitter", "3s"]).await;
    let tasks = connect_clients(&proxy, 50, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    app.signal("KILL");
    let reports = collect(tasks, Duration::from_secs(5)).await;
    for (i, r) in reports.iter().enumerate() {
        assert!(r.error.is_none(), "client {i}: {:?}", r.error);
        let (code, reason) = r.close.clone().expect("close frame");
        assert_eq!(code, 1012, "client {i}");
        assert!(
            hint_of(&reason).is_some_and(|h| h <= 3000),
            "client {i}: {reason}"
        );
        let after = r.close_at.expect("time").duration_since(killed);
        assert!(
            after < Duration::from_secs(1),
            "client {i} got its close after {after:?}"
        );
    }
    assert!(
        proxy
            .metric(r#"websocket_errors_total{kind="app_gone"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_no_connections_exits_right_after_the_delay() {
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &["--drain-delay", "500ms", "--drain-window", "30s"],
    )
    .await;
    let t = Instant::now();
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_drain_and_prestop() {
    let dir = std::env::temp_dir().join(format!("wsdrain-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("write");
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--admin-token-file",
            token_file.to_str().expect("utf8"),
            "--drain-delay",
            "100ms",
            "--drain-window",
            "100ms",
        ],
    )
    .await;
    for (method, path) in [("POST", "/drain"), ("GET", "/prestop")] {
        let (code, head, _) = http_full(proxy.admin, method, path, &[], b"")
            .await
            .expect("call");
        assert_eq!(code, 401, "{method} {path} without a token");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
        let (code, _) = http(
            proxy.admin,
            method,
            path,
            &[("Authorization", "Bearer wrong")],
            b"",
        )
        .await
        .expect("call");
        assert_eq!(code, 401, "{method} {path} with a wrong token");
    }
    // Read-only endpoints stay open.
    assert_eq!(
        http(proxy.admin, "GET", "/drain", &[], b"")
            .await
            .expect("status")
            .0,
        200
    );
    assert_eq!(
        http(proxy.admin, "GET", "/readyz", &[], b"")
            .await
            .expect("readyz")
            .0,
        200
    );
    let (code, _) = http(
        proxy.admin,
        "GET",
        "/prestop",
        &[("Authorization", "Bearer s3cret")],
        b"",
    )
    .await
    .expect("prestop");
    assert_eq!(code, 200);
    let _ = std::fs::remove_dir_all(dir);
}
