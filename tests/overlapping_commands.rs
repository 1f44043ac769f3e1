//! Admin commands that overlap: a second `POST /shed` while one runs, a `DELETE /drain`
//! meeting a signal's drain, a `wsdrain drain --wait` whose drain is cancelled. Every
//! answer tells what really happens, and a signal's drain is never lost.

mod common;

use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients};
use common::{EchoApp, Proxy, http};

/// Two sheds of 10 on 20 connections: the second, sent while the first runs, is
/// refused with 409, and exactly the 10 promised connections close, at the planned rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shed_while_one_runs_is_refused() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--drain-window", "2s"]).await;
    let tasks = connect_clients(&proxy, 20, Duration::from_millis(300)).await;
    let (code, body) = http(proxy.admin, "POST", "/shed?count=10", &[], b"")
        .await
        .expect("first shed");
    assert_eq!(code, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["shedding"], 10);
    let (code, body) = http(proxy.admin, "POST", "/shed?count=10", &[], b"")
        .await
        .expect("second shed");
    assert_eq!(code, 409, "a second shed while one runs: {body}");
    // Once the first is over (2 s window), a new shed is taken again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let closed = proxy
            .metric(r#"wsdrain_rebalance_closed_total{reason="shed"}"#)
            .await;
        if closed >= 10.0 || Instant::now() > deadline {
            assert_eq!(closed, 10.0, "closes of the first shed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        proxy
            .metric(r#"wsdrain_rebalance_closed_total{reason="shed"}"#)
            .await,
        10.0,
        "nothing more than promised"
    );
    let (code, body) = http(proxy.admin, "POST", "/shed?count=1", &[], b"")
        .await
        .expect("third shed");
    assert_eq!(code, 202, "a shed after the first finished: {body}");
    proxy.signal("KILL");
    drop(collect(tasks, Duration::from_secs(10)).await);
}

/// Runs `wsdrain drain --wait` against `admin`; returns its exit status and stderr, or
/// `None` if it had not ended within `limit` (it is then killed).
fn drain_wait(admin: std::net::SocketAddr, limit: Duration) -> Option<(i32, String)> {
    let mut child = std::process::Command::new(common::wsdrain_bin())
        .args(["drain", "--wait", "--admin", &format!("http://{admin}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wsdrain drain");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wsdrain drain --wait` whose drain an operator cancels: it ends with an error that
/// says so, instead of waiting for a `done` that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_ends_when_the_drain_is_cancelled() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &["--drain-delay", "0s", "--drain-window", "30s"]).await;
    let tasks = connect_clients(&proxy, 5, Duration::from_millis(300)).await;
    let admin = proxy.admin;
    let waiter = tokio::task::spawn_blocking(move || drain_wait(admin, Duration::from_secs(15)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(proxy.admin, "GET", "/drain", &[], b"")
            .await
            .expect("status");
        if body.contains("\"draining\":true") {
            break;
        }
        assert!(Instant::now() < deadline, "the drain never started: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = http(proxy.admin, "DELETE", "/drain", &[], b"")
        .await
        .expect("cancel");
    assert_eq!(code, 200, "{body}");
    let ended = waiter.await.expect("waiter");
    let (status, stderr) = ended.expect("wsdrain drain --wait still waiting 15 s after the cancel");
    assert_ne!(status, 0, "a cancelled drain is not a success");
    assert!(stderr.contains("cancelled"), "stderr: {stderr}");
    proxy.signal("KILL");
    drop(collect(tasks, Duration::from_secs(10)).await);
}

/// An admin port that accepts and never answers: `wsdrain drain` gives up with an
/// error in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_on_an_admin_port_that_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let ended = tokio::task::spawn_blocking(move || drain_wait(admin, Duration::from_secs(30)))
        .await
        .expect("waiter");
    let (status, stderr) = ended.expect("wsdrain drain still waiting after 30 s");
    assert_ne!(status, 0);
    assert!(stderr.contains("did not answer"), "stderr: {stderr}");
}
