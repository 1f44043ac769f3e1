//! The drain's promise at the edges: every upgraded client leaves with one close frame
//! carrying the hint, at its scheduled time, and the process exits only when that is
//! done. Real `wsdrain` processes, real clients and apps on loopback, real signals and
//! the real admin port.

mod common;

use std::time::{Duration, Instant};

use common::clients::{collect, connect_clients, hint_of};
use common::{EchoApp, Proxy, http};
use futures_util::StreamExt;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Item 1 (the snapshot race), as a guard under load: 200 open connections and a stream
/// of new upgrades while a drain starts. Every attempt ends in a 503 before the upgrade
/// or in a 1012 close with a hint; nothing is left for the deadline to cut. (The race's
/// window is microseconds wide; `drain/tests.rs` shows it where it lives.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_racing_the_drain_are_refused_or_scheduled_never_cut() {
    for round in 0..3 {
        let app = EchoApp::start().await;
        let mut proxy = Proxy::start(
            app.addr,
            &[
                "--drain-delay",
                "300ms",
                "--drain-window",
                "1s",
                "--close-timeout",
                "3s",
                "--reconnect-jitter",
                "1s",
            ],
        )
        .await;
        let open = connect_clients(&proxy, 200, Duration::from_millis(500)).await;
        // ~300 upgrades a second from 10 racers, through the announce phase and past
        // the seal.
        let stop_at = Instant::now() + Duration::from_millis(900);
        let mut racers = Vec::new();
        for _ in 0..10 {
            let url = proxy.url("/");
            racers.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while Instant::now() < stop_at {
                    let outcome = match connect_async(url.as_str()).await {
                        // Upgraded: wait for its close on the side and race on.
                        Ok((mut ws, _)) => tokio::spawn(async move {
                            loop {
                                match tokio::time::timeout(Duration::from_secs(8), ws.next()).await
                                {
                                    Ok(Some(Ok(Message::Close(Some(f))))) => {
                                        break format!("close {} {}", u16::from(f.code), f.reason);
                                    }
                                    Ok(Some(Ok(_))) => continue,
                                    other => break format!("no close frame: {other:?}"),
                                }
                            }
                        }),
                        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                            let status = resp.status().as_u16();
                            tokio::spawn(async move { format!("http {status}") })
                        }
                        Err(e) => {
                            let e = e.to_string();
                            tokio::spawn(async move { format!("error {e}") })
                        }
                    };
                    outcomes.push(outcome);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                outcomes
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (code, _) = http(proxy.admin, "POST", "/drain", &[], b"")
            .await
            .expect("POST /drain");
        assert_eq!(code, 202);
        let mut attempts = 0;
        for r in racers {
            for outcome in r.await.expect("racer") {
                let outcome = outcome.await.expect("outcome");
                attempts += 1;
                let ok = outcome == "http 503"
                    || (outcome.starts_with("close 1012 ")
                        && hint_of(outcome.trim_start_matches("close 1012 ")).is_some());
                assert!(ok, "round {round}: an upgrade ended as {outcome:?}");
            }
        }
        assert!(attempts > 100, "only {attempts} attempts");
        let reports = collect(open, Duration::from_secs(10)).await;
        assert!(
            reports
                .iter()
                .all(|r| r.close.as_ref().map(|c| c.0) == Some(1012))
        );
        let done_by = Instant::now() + Duration::from_secs(8);
        let status = loop {
            let status = json(
                &http(proxy.admin, "GET", "/drain", &[], b"")
                    .await
                    .expect("status")
                    .1,
            );
            if status["phase"] == "done" || Instant::now() > done_by {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status["phase"], "done", "round {round}: {status}");
        assert_eq!(status["closed_by_deadline"], 0, "round {round}: {status}");
        assert_eq!(
            proxy.metric("wsdrain_drain_closed_total").await as u64,
            status["closed"].as_u64().unwrap_or(0)
        );
        proxy.signal("TERM");
        assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
    }
}

/// Item 2 (two deadlines): connections that arrive during the announce phase, under a
/// rate limit, make the stagger longer than it looked at the signal. The process must
/// honour the drain's deadline — every client gets its close frame — and exit by the
/// deadline `GET /drain` reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_outlives_a_stagger_stretched_after_the_signal() {
    let app = EchoApp::start().await;
    let mut proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "1s",
            "--drain-window",
            "500ms",
            "--drain-max-rate",
            "10",
            "--close-timeout",
            "500ms",
        ],
    )
    .await;
    let early = connect_clients(&proxy, 2, Duration::from_millis(300)).await;
    let signalled = Instant::now();
    proxy.signal("TERM");
    // The announce phase still serves: 28 more arrive. At 10 closes/s the 30 take 3 s.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = connect_clients(&proxy, 28, Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = json(
        &http(proxy.admin, "GET", "/drain", &[], b"")
            .await
            .expect("status")
            .1,
    );
    assert_eq!(status["phase"], "staggering", "{status}");
    assert_eq!(status["open_at_stagger"], 30, "{status}");
    let reported = Duration::from_millis(status["deadline_in_ms"].as_u64().expect("deadline"))
        + signalled.elapsed();
    let code = tokio::task::spawn_blocking(move || {
        let code = proxy.wait_exit(Duration::from_secs(15));
        (code, signalled.elapsed())
    })
    .await
    .expect("wait");
    let mut reports = collect(early, Duration::from_secs(10)).await;
    reports.extend(collect(late, Duration::from_secs(10)).await);
    let no_close: Vec<_> = reports.iter().filter(|r| r.close.is_none()).collect();
    assert!(
        no_close.is_empty(),
        "{} clients were cut without a close frame: {:?}",
        no_close.len(),
        no_close.first()
    );
    assert!(reports.iter().all(|r| {
        r.close
            .as_ref()
            .is_some_and(|c| c.0 == 1012 && hint_of(&c.1).is_some())
    }));
    let last_close = reports
        .iter()
        .filter_map(|r| r.close_at)
        .max()
        .expect("closes")
        .duration_since(signalled);
    assert!(
        last_close > Duration::from_millis(3500),
        "stagger of 3 s after a 1 s delay: {last_close:?}"
    );
    assert_eq!(code.0, Some(0));
    assert!(code.1 >= last_close, "exited before the last close");
    assert!(
        code.1 <= reported + Duration::from_millis(1500),
        "exited at {:?}, deadline reported {reported:?}",
        code.1
    );
}

/// Item 6: a rate that would overflow a sleep is refused where it is parsed, instead of
/// panicking on SIGTERM and cutting every client without a close frame.
#[tokio::test]
async fn a_rate_that_would_overflow_is_refused_at_start() {
    let bin = std::env::var("WSDRAIN_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsdrain").to_string());
    let admin = common::free_addr();
    let mut child = std::process::Command::new(bin)
        .args(["proxy", "--drain-max-rate", "1e-300"])
        .args(["--listen", &common::free_addr().to_string()])
        .args(["--admin", &admin.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(status) = status else {
        // It started: show what SIGTERM then does.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("wait");
        panic!("--drain-max-rate 1e-300 was accepted; on SIGTERM the process exited with {status}");
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--drain-max-rate"), "{stderr}");
}

/// Item 7: answers tell the state after the request took effect; a shed reports how
/// long it really lasts; a drain supersedes a shed and every close is counted once,
/// under its own cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_tell_the_truth_and_closes_are_counted_once() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "0",
            "--drain-window",
            "1s",
            "--drain-max-rate",
            "2",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let clients = connect_clients(&proxy, 20, Duration::from_millis(500)).await;
    // 10 closes at 2 per second: 5 s, not the 1 s window.
    let (code, body) = http(proxy.admin, "POST", "/shed?count=10", &[], b"")
        .await
        .expect("shed");
    assert_eq!(code, 202);
    let shed = json(&body);
    assert_eq!(shed["shedding"], 10);
    assert_eq!(shed["window_ms"], 5000, "{shed}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (code, body) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("drain");
    assert_eq!(code, 202);
    let answer = json(&body);
    assert_ne!(answer["phase"], "serving", "{answer}");
    assert!(answer["started"].is_string(), "{answer}");
    let reports = collect(clients, Duration::from_secs(30)).await;
    assert!(
        reports
            .iter()
            .all(|r| r.close.as_ref().is_some_and(|c| c.0 == 1012))
    );
    let shed_closes = proxy
        .metric("wsdrain_rebalance_closed_total{reason=\"shed\"}")
        .await;
    let drain_closes = proxy.metric("wsdrain_drain_closed_total").await;
    assert!(
        (1.0..=4.0).contains(&shed_closes),
        "the shed stops when the drain starts: {shed_closes}"
    );
    assert_eq!(
        shed_closes + drain_closes,
        20.0,
        "each of the 20 closes counted once (shed {shed_closes}, drain {drain_closes})"
    );
}

/// Item 9: a drain started by mistake over HTTP can be cancelled: readiness returns,
/// the connections still open stay, closes not yet sent are withdrawn. A drain the
/// kubelet started cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_drain_can_be_cancelled() {
    let app = EchoApp::start().await;
    let token = tempfile_with("a-token-of-sixteen-chars");
    let proxy = Proxy::start(
        app.addr,
        &[
            "--drain-delay",
            "0",
            "--drain-window",
            "20s",
            "--admin-token-file",
            &token,
        ],
    )
    .await;
    let auth = [("authorization", "Bearer a-token-of-sixteen-chars")];
    let clients = connect_clients(&proxy, 20, Duration::from_millis(300)).await;
    let (code, _) = http(proxy.admin, "POST", "/drain", &auth, b"")
        .await
        .expect("drain");
    assert_eq!(code, 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        http(proxy.admin, "GET", "/readyz", &[], b"")
            .await
            .expect("ready")
            .0,
        503
    );
    let (code, _) = http(proxy.admin, "DELETE", "/drain", &[], b"")
        .await
        .expect("delete");
    assert_eq!(code, 401, "the token guards DELETE too");
    let (code, body) = http(proxy.admin, "DELETE", "/drain", &auth, b"")
        .await
        .expect("delete");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["phase"], "serving");
    assert_eq!(
        http(proxy.admin, "GET", "/readyz", &[], b"")
            .await
            .expect("ready")
            .0,
        200
    );
    assert_eq!(proxy.metric("wsdrain_draining").await, 0.0);
    // New upgrades are welcome again.
    let (mut fresh, _) = connect_async(proxy.url("/"))
        .await
        .expect("upgrade after cancel");
    // The 1 or 2 closes due in the first 1.5 s of a 20 s window went out; the rest stay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut closed = 0;
    let mut open = 0;
    for task in clients {
        if task.is_finished() {
            closed += 1;
        } else {
            open += 1;
            task.abort();
        }
    }
    assert!(closed <= 3 && open >= 17, "closed {closed}, open {open}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fresh.next())
            .await
            .is_err(),
        "the new connection stays open"
    );
    // The kubelet's drain is the pod going away: not cancellable.
    let prestop = tokio::spawn({
        let admin = proxy.admin;
        async move {
            http(
                admin,
                "GET",
                "/prestop",
                &[("authorization", "Bearer a-token-of-sixteen-chars")],
                b"",
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = http(proxy.admin, "DELETE", "/drain", &auth, b"")
        .await
        .expect("delete");
    assert_eq!(code, 409, "{body}");
    prestop.abort();
}

fn tempfile_with(contents: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "wsdrain-token-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, contents).expect("write token");
    path.display().to_string()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
