//! The data path's threads (`src/workers.rs`): `TOKIO_WORKER_THREADS` sets how many
//! there are, connections on all of them are counted, relayed and drained by the one
//! drain on the main thread, and a bad value is a clear error. Real `wsdrain` process,
//! real sockets on loopback, real signals; every wait is bounded.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use common::clients::hint_of;
use common::{EchoApp, free_addr, http, metric_value};

const CLIENTS: usize = 12;

/// Names of the process's threads, from `/proc/PID/task/*/comm`.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let comm = task.expect("task").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim().to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_path_threads_follow_tokio_worker_threads_and_drain_across_them() {
    let app = EchoApp::start().await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsdrain"))
        .env("TOKIO_WORKER_THREADS", "3")
        .arg("proxy")
        .args(["--listen", &listen.to_string()])
        .args(["--upstream", &app.addr.to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--log-level", "warn"])
        .args(["--drain-delay", "0s", "--drain-window", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn wsdrain");
    let up_by = Instant::now() + Duration::from_secs(10);
    while !matches!(http(admin, "GET", "/healthz", &[], b"").await, Ok((200, _))) {
        assert!(Instant::now() < up_by, "wsdrain did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A thread names itself once it runs, which can be just after the admin port
    // answers: read the names until all three are there, or give up after 5 s.
    let named_by = Instant::now() + Duration::from_secs(5);
    let data = loop {
        let mut data: Vec<String> = thread_names(child.id())
            .into_iter()
            .filter(|n| n.starts_with("wsdrain-data-"))
            .collect();
        data.sort();
        if data.len() >= 3 || Instant::now() >= named_by {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(data, ["wsdrain-data-0", "wsdrain-data-1", "wsdrain-data-2"]);

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            connect_async(format!("ws://{listen}/")),
        )
        .await
        .expect("connect in time")
        .expect("upgrade through wsdrain");
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(echo, Message::text(text));
        clients.push(ws);
    }
    let (_, metrics) = http(admin, "GET", "/metrics", &[], b"")
        .await
        .expect("metrics");
    assert_eq!(
        metric_value(&metrics, "websocket_connections_active"),
        CLIENTS as f64,
        "connections on every data-path thread are counted"
    );
    // The per-message counters are kept per thread and summed on scrape: the sums are
    // exact, and idle relays hold no buffer, whichever thread they run on.
    for direction in ["client_to_app", "app_to_client"] {
        let messages = format!(r#"websocket_messages_total{{direction="{direction}"}}"#);
        assert_eq!(
            metric_value(&metrics, &messages),
            CLIENTS as f64,
            "{messages}"
        );
        let bytes = format!(r#"websocket_bytes_total{{direction="{direction}"}}"#);
        // "hello 0".."hello 11": 7 or 8 payload bytes, a 2-byte header, 4 mask bytes
        // from the client.
        let payload: usize = (0..CLIENTS).map(|i| format!("hello {i}").len() + 2).sum();
        let mask = if direction == "client_to_app" {
            4 * CLIENTS
        } else {
            0
        };
        assert_eq!(
            metric_value(&metrics, &bytes),
            (payload + mask) as f64,
            "{bytes}"
        );
    }
    assert_eq!(metric_value(&metrics, "wsdrain_relay_buffers_in_use"), 0.0);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for mut ws in clients {
        let frame = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("close frame within the window")
            {
                Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(u16::from(frame.code), 1012);
        assert!(hint_of(&frame.reason).is_some(), "{}", frame.reason);
    }
    let exit_by = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() >= exit_by {
            let _ = child.kill();
            panic!("wsdrain did not exit after the drain");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
}

#[test]
fn a_bad_tokio_worker_threads_is_a_clear_error() {
    for bad in ["0", "two"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsdrain"))
            .env("TOKIO_WORKER_THREADS", bad)
            .arg("proxy")
            .args(["--listen", &free_addr().to_string()])
            .args(["--upstream", &free_addr().to_string()])
            .args(["--admin", &free_addr().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wsdrain");
        let exit_by = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() >= exit_by {
                let _ = child.kill();
                panic!("{bad}: wsdrain kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains("TOKIO_WORKER_THREADS must be a whole number from 1 to 1024"),
            "{bad}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
}
