//! The big drain: 2,000 real clients through one proxy. In its own test binary so it
//! runs alone (cargo runs test binaries one after another), because it measures when
//! each close arrives.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients, hint_of};
use common::{EchoApp, Proxy, http};
use tokio_tungstenite::connect_async;

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
    // One message per client every 2 s: enough to check ordering, light on CPU.
    let tasks = connect_clients(&proxy, N, Duration::from_millis(2000)).await;
    assert_eq!(
        proxy
            .metric_reaching(
                "websocket_connections_active",
                N as f64,
                Duration::from_secs(5)
            )
            .await,
        N as f64
    );

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
    assert!(total_sent > N, "clients sent {total_sent} messages");
    assert_eq!(
        lost, 0,
        "messages sent before the close that never reached the app"
    );
}
