//! A real `wsdrain webhook` process against slow bodies: one trickling body is cut with
//! 408 at the body deadline, and 40 stalled 4 MiB bodies neither grow its memory without
//! bound nor stop it reviewing.

mod common;
mod hostile_support;

use std::time::{Duration, Instant};

use hostile_support::webhook::*;
use hostile_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// A webhook body that trickles in is cut with 408 once the body deadline
/// passes, instead of holding its connection (and up to 4 MiB) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_slow_body_gets_408() {
    let hook = Webhook::start().await;
    let mut tls = hook.connect().await.unwrap();
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = started + Duration::from_secs(25);
    while Instant::now() < deadline && find(&got, b"\r\n\r\n").is_none() {
        let _ = tls.write_all(b" ").await;
        if let Ok(Ok(n)) = timeout(Duration::from_millis(200), tls.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "after {:?} of trickling: {text:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// 40 clients each hold a nearly complete 4 MiB body open (sent fast, last byte
/// never) and keep dribbling; a normal review is still answered within 1 s, and the
/// webhook's memory stays flat instead of growing by the bodies (40 × 4 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_survives_40_slow_bodies() {
    let hook = Webhook::start().await;
    let rss_before = hook.rss_kib();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tls = hook.connect().await.unwrap();
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            let len = 4 << 20;
            let head = format!(
                "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            if tls.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent + chunk.len() < len - 1 {
                if tls.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < len - 1 {
                if tls.write_all(b" ").await.is_err() {
                    return;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let mut tls = hook.connect().await.unwrap();
    let body = small_review();
    let req = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let resp = read_response(&mut tls, Duration::from_secs(5))
        .await
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");
    assert!(
        took < Duration::from_secs(1),
        "a normal review took {took:?}"
    );
    let grown = hook.rss_kib().saturating_sub(rss_before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        t.abort();
    }
    eprintln!("webhook RSS grew {grown} KiB with 40 stalled 4 MiB bodies; review took {took:?}");
    assert!(
        grown < 48 * 1024,
        "webhook RSS grew {grown} KiB holding 40 stalled bodies"
    );
}
