//! The fleet reconnect budget over real sockets: `--fleet-max-rate R
//! --max-concurrent-drains K` makes one pod's drain close at R/K per second, and a drain
//! that cannot fit the grace period says so (`GET /drain`, `wsdrain_drain_over_budget`).
//! In its own test binary so it runs alone, because it measures when each close arrives.

mod common;

use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients, hint_of};
use common::{EchoApp, Proxy, http};

/// `GET /drain` as JSON.
async fn drain_status(proxy: &Proxy) -> serde_json::Value {
    let (status, body) = http(proxy.admin, "GET", "/drain", &[], b"")
        .await
        .expect("GET /drain");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("GET /drain is JSON")
}

/// Close instants of every client, relative to `t0`; panics on a client error or a
/// close without a hint.
fn close_times(reports: &[common::clients::ClientReport], t0: Instant) -> Vec<f64> {
    let mut times: Vec<f64> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert!(r.error.is_none(), "client {i}: {:?}", r.error);
            let (code, reason) = r
                .close
                .clone()
                .unwrap_or_else(|| panic!("client {i}: no close"));
            assert_eq!(code, 1012, "client {i}");
            assert!(hint_of(&reason).is_some(), "client {i}: {reason:?}");
            r.close_at.expect("time").duration_since(t0).as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_budget_of_100_over_4_drains_drain_1000_connections_at_25_per_second() {
    const N: usize = 1000;
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--fleet-max-rate",
            "100",
            "--max-concurrent-drains",
            "4",
            "--drain-delay",
            "1s",
            // A short window: the stretch to 40 s comes from the budget alone.
            "--drain-window",
            "2s",
            "--close-timeout",
            "3s",
            "--max-connections",
            "2000",
            "--connect-timeout",
            "10s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, N, Duration::from_millis(5000)).await;
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = drain_status(&proxy).await;
    assert_eq!(status["budget_per_pod"], 25.0, "{status}");
    assert_eq!(status["over_budget"], false, "{status}");
    let deadline_in = status["deadline_in_ms"].as_u64().expect("deadline");
    // 1 s announce + 40 s stagger + 3 s close timeout, 3 s of it gone.
    assert!(
        (38_000..=42_500).contains(&deadline_in),
        "deadline in {deadline_in} ms"
    );
    assert_eq!(proxy.metric("wsdrain_drain_over_budget").await, 0.0);

    let reports = collect(tasks, Duration::from_secs(70)).await;
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
    let times = close_times(&reports, t0);
    assert_eq!(times.len(), N);
    // The rate over the middle 90 % of the closes, and over all of them.
    let (lo, hi) = (times[N / 20], times[N - N / 20 - 1]);
    let middle = (N - 2 * (N / 20) - 1) as f64 / (hi - lo);
    let overall = (N - 1) as f64 / (times[N - 1] - times[0]);
    for (what, rate) in [("middle 90 %", middle), ("all", overall)] {
        assert!(
            (22.5..=27.5).contains(&rate),
            "{what}: {rate:.2} closes/s, want 25 ± 10 %"
        );
    }
    // No second in which this pod closed much more than its share.
    let mut per_second = vec![0usize; times[N - 1].ceil() as usize + 1];
    for t in &times {
        per_second[*t as usize] += 1;
    }
    let peak = per_second.iter().copied().max().unwrap_or(0);
    assert!(
        peak <= 35,
        "busiest second had {peak} closes: {per_second:?}"
    );
    println!(
        "fleet budget: {middle:.2}/s over the middle 90 %, {overall:.2}/s overall, peak {peak}/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_cannot_fit_the_grace_period_uses_it_fully_and_says_so() {
    const N: usize = 100;
    let app = EchoApp::start().await;
    // 2 closes per second would take 50 s; the grace period leaves 12 - 1 - 1 - 2 = 8 s.
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--fleet-max-rate",
            "8",
            "--max-concurrent-drains",
            "4",
            "--termination-grace-period",
            "12s",
            "--drain-delay",
            "1s",
            "--drain-window",
            "1s",
            "--close-timeout",
            "1s",
            "--connect-timeout",
            "10s",
        ],
    )
    .await;
    let tasks = connect_clients(&proxy, N, Duration::from_millis(5000)).await;
    let t0 = Instant::now();
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = drain_status(&proxy).await;
    assert_eq!(status["over_budget"], true, "{status}");
    assert_eq!(status["budget_per_pod"], 2.0, "{status}");
    assert_eq!(proxy.metric("wsdrain_drain_over_budget").await, 1.0);

    let reports = collect(tasks, Duration::from_secs(30)).await;
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    let exited = t0.elapsed();
    assert!(exited < Duration::from_secs(12), "exited after {exited:?}");
    let times = close_times(&reports, t0);
    // Spread over the whole 8 s the grace period leaves (from 1 s to 9 s), not cut short.
    assert!(
        times[0] < 2.0 && times[N - 1] > 7.5,
        "{:.2}..{:.2}",
        times[0],
        times[N - 1]
    );
}
