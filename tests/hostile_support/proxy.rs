//! A `wsdrain proxy` process on free loopback ports, and what a test reads off it:
//! metrics, RSS, CPU, descriptors, its log, and whether it is still sound.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::common::{Launch, spawn_proxy};

/// A running `wsdrain proxy`, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Proxy {
    /// Starts the proxy in front of `upstream` with extra flags, and waits for /healthz.
    pub async fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        Self::start_limited(upstream, extra, None).await
    }

    /// Like [`Proxy::start`], with the open-file limit set to `nofile` when given. The
    /// log (level info) goes to a file, for [`Proxy::assert_sound`] to read.
    pub async fn start_limited(upstream: SocketAddr, extra: &[&str], nofile: Option<u32>) -> Proxy {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "wsdrain-test-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let logfile = std::fs::File::create(&log).expect("create the proxy's log file");
        let (child, listen, admin) = spawn_proxy(Launch {
            upstream,
            extra,
            log_level: "info",
            nofile,
            stderr: logfile.into(),
        })
        .await;
        Proxy {
            child,
            listen,
            admin,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        crate::common::rss_kib(self.pid())
    }

    /// CPU time (user + system) of the proxy, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Open file descriptors of the proxy.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The value of `websocket_errors_total{kind="<kind>"}` (0 when absent).
    pub async fn errors(&self, kind: &str) -> u64 {
        self.metric(&format!("websocket_errors_total{{kind=\"{kind}\"}}"))
            .await
    }

    /// The value of one exact metric line prefix (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        http_raw(self.admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("metrics")
    }

    /// Waits until `websocket_connections_active` is `n`.
    pub async fn wait_active(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let active = self.metric("websocket_connections_active").await;
            if active == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "websocket_connections_active stayed {active}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The proxy's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Asserts the process is alive and its log shows no panic.
    pub fn assert_sound(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "proxy exited; log:\n{}",
            self.log_text()
        );
        let log = self.log_text();
        assert!(!log.contains("panicked"), "proxy panicked:\n{log}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Sum of every `websocket_errors_total{kind}` series.
pub async fn all_errors(proxy: &Proxy) -> u64 {
    proxy
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("websocket_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// CPU time of `pid` in seconds, from /proc.
pub fn cpu_secs(proxy: &Proxy) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    proxy.cpu_ticks() as f64 / hz
}
