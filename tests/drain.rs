//! The staggered drain over real sockets and real signals: thousands of clients, the
//! kubelet's termination orders, and the edge cases around them.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{ClientReport, collect, connect_clients, hint_of};
use common::{EchoApp, Proxy, free_port, http, http_full};

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

/// A "pod" for the lifecycle tests: the Python app as its own process, the sidecar in
/// front (300 ms delay, 2 s window), and 200 clients sending every 200 ms.
async fn pod_with_clients() -> (
    AppProcess,
    Proxy,
    Vec<tokio::task::JoinHandle<common::clients::ClientReport>>,
) {
    let app = AppProcess::start();
    let proxy = Proxy::start(
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
    (app, proxy, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_sidecar_order_app_outlives_the_drain() {
    // Kubelet order for a native sidecar: the app's preStop (httpGet /prestop) runs
    // first and blocks; then SIGTERM to the app; the sidecar gets SIGTERM last.
    let (app, mut proxy, tasks) = pod_with_clients().await;
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
    let (app, mut proxy, tasks) = pod_with_clients().await;
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
