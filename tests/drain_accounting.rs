//! The drain's figures stay exact while connections end on several data-path threads
//! at once: `wsdrain_drain_remaining_connections` only goes down and ends at 0, and
//! `GET /drain` after a cancel shows no counts of the cancelled drain.

mod common;

use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients};
use common::{EchoApp, Proxy, http};

async fn drain_status(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = http(proxy.admin, "GET", "/drain", &[], b"")
        .await
        .expect("GET /drain");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// 400 connections closed at once (a zero window) on the data-path threads: the
/// remaining gauge never goes up and is 0 once the drain is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_connections_only_go_down_and_end_at_zero() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
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
    let tasks = connect_clients(&proxy, 400, Duration::from_secs(5)).await;
    let (code, body) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("POST /drain");
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        seen.push(proxy.metric("wsdrain_drain_remaining_connections").await);
        if drain_status(&proxy).await["phase"] == "done" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(collect(tasks, Duration::from_secs(10)).await);
    // The last relay's books are done just after the registry is empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen.push(proxy.metric("wsdrain_drain_remaining_connections").await);
    let rises: Vec<_> = seen.windows(2).filter(|w| w[1] > w[0]).collect();
    assert!(rises.is_empty(), "the gauge went up: {rises:?} in {seen:?}");
    assert_eq!(
        seen.last(),
        Some(&0.0),
        "remaining after the drain: {seen:?}"
    );
    let status = drain_status(&proxy).await;
    assert_eq!(status["closed_by_schedule"], 400, "{status}");
}

/// After `DELETE /drain`, `GET /drain` reports a fresh state, not the cancelled
/// drain's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_clears_the_drain_status() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "0s",
            "--drain-window",
            "4s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, 40, Duration::from_secs(5)).await;
    assert_eq!(
        http(proxy.admin, "POST", "/drain", &[], b"")
            .await
            .expect("drain")
            .0,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while drain_status(&proxy).await["closed"].as_u64().unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "no close within the window");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http(proxy.admin, "DELETE", "/drain", &[], b"")
            .await
            .expect("cancel")
            .0,
        200
    );
    let status = drain_status(&proxy).await;
    assert_eq!(status["phase"], "serving", "{status}");
    assert_eq!(status["closed"], 0, "{status}");
    assert_eq!(status["closed_by_schedule"], 0, "{status}");
    assert_eq!(status["open_at_stagger"], 0, "{status}");
    proxy.signal("KILL");
    drop(collect(tasks, Duration::from_secs(10)).await);
}
