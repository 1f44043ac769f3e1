//! Shared pieces of the side-by-side benches: the echo app, the plain TCP relay, the
//! contenders (wsdrain, nginx, HAProxy, Traefik, Caddy) as child processes, a minimal
//! WebSocket client, and process bookkeeping (ports, RSS, file-descriptor limit).
//!
//! The echo app and the TCP relay run as child processes of the bench binary itself
//! (`<bench> __echo-app PORT`, `<bench> __tcp-relay LISTEN UPSTREAM`), so every
//! contender is a separate process, like the real deployment, and the load generator
//! in the parent process measures them all the same way.
//!
//! One file per job: `echo_app` (the app behind every contender; it also pushes, for the
//! push scenario), `contenders` (the proxies as child processes, and installing them),
//! `pypi_contenders` (Traefik and Caddy, installed from PyPI), `traefik_ingress` (Traefik
//! as the rollout bench's balancer), `push` (the push
//! scenario's bursts and the clients that time them), `client` (the load side), `frames`
//! (the wire format both ends share), `process` (child processes, ports, CPU and RSS
//! accounting), `tls` (the certificate and `wss://` connect of the TLS rows); this file
//! holds settings, outputs and the child modes.

#![allow(dead_code)]

mod client;
mod contenders;
mod echo_app;
mod frames;
mod idle_sse;
mod process;
mod push;
mod pypi_contenders;
mod tls;
mod traefik_ingress;

// Each bench uses a different subset of these.
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use contenders::*;
#[allow(unused_imports)]
pub use echo_app::*;
#[allow(unused_imports)]
pub use frames::*;
#[allow(unused_imports)]
pub use idle_sse::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use push::*;
#[allow(unused_imports)]
pub use pypi_contenders::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use traefik_ingress::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// True when `WSDRAIN_BENCH_SMOKE` is set to anything but `0` or empty.
pub fn smoke() -> bool {
    std::env::var("WSDRAIN_BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where results go: `WSDRAIN_BENCH_OUT`, else `<target dir>/wsdrain-bench`.
pub fn out_dir() -> PathBuf {
    let dir = match std::env::var_os("WSDRAIN_BENCH_OUT") {
        Some(d) => PathBuf::from(d),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("wsdrain-bench")
        }
    };
    std::fs::create_dir_all(&dir).expect("create the bench output directory");
    dir
}

/// The wsdrain binary Cargo built for this bench (release for `cargo bench`, debug for
/// `cargo test --benches`), or `WSDRAIN_BIN`.
pub fn wsdrain_bin() -> PathBuf {
    std::env::var_os("WSDRAIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wsdrain")))
}

/// Handles the hidden child-process modes. Returns true when this process was one.
pub fn run_child_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__echo-app") => {
            let port: u16 = args[2].parse().expect("port");
            runtime().block_on(echo_app(port));
            true
        }
        Some("__load") => {
            // For profiling: `<bench> __load PORT CONNS SIZE SECONDS`.
            let n = |i: usize| args[i].parse::<usize>().expect("number");
            let (port, conns, size, secs) = (n(2) as u16, n(3), n(4), n(5));
            let (rt_s, _) = runtime().block_on(load_for(
                port,
                conns,
                size,
                Duration::from_secs(secs as u64),
            ));
            println!("{rt_s:.0} round trips/s");
            true
        }
        Some("__push-load") => {
            // For profiling (benches/profile.sh count-push): `<bench> __push-load PORT
            // CLIENTS BURSTS SIZE INTERVAL_MS`: connects, prints `warm`, waits for a line on
            // stdin (the caller zeroes its counters), runs the bursts, prints the tally.
            let n = |i: usize| args[i].parse::<u64>().expect("number");
            let p = PushParams {
                size: n(5) as usize,
                count: n(4),
                interval: Duration::from_millis(n(6)),
            };
            let rt = runtime();
            let (socks, failed) = rt.block_on(push_connect(n(2) as u16, n(3) as usize, p));
            println!("warm {}", socks.len());
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let r = rt.block_on(push_run(socks, failed, p, None));
            println!(
                "done {} delivered of {}, lost {}, reordered {}, errors {}",
                r.delivered, r.expected, r.lost, r.reordered, r.errors
            );
            true
        }
        Some("__tcp-relay") => {
            let listen: u16 = args[2].parse().expect("port");
            let upstream: u16 = args[3].parse().expect("port");
            runtime().block_on(tcp_relay(listen, upstream));
            true
        }
        _ => false,
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Writes `text` to `path`, saying so.
pub fn write_out(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create output file");
    f.write_all(text.as_bytes()).expect("write output file");
    eprintln!("wrote {}", path.display());
}

/// The load average line of `/proc/loadavg`, recorded before and after each bench.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Machine and load facts recorded next to the numbers.
pub fn machine_info() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    m.insert("cpu".into(), cpu);
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string(),
    );
    m.insert("loadavg".into(), loadavg());
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    let ver = |cmd: &str, arg: &str| {
        Command::new(bin_path(cmd))
            .arg(arg)
            .output()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                s.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    m.insert("nginx".into(), ver("nginx", "-v"));
    m.insert("haproxy".into(), ver("haproxy", "-v"));
    m.insert("traefik".into(), venv_version("traefik", "version"));
    m.insert("caddy".into(), venv_version("caddy", "version"));
    m.insert(
        "profile".into(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
    );
    m
}
