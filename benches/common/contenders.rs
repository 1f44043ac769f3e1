//! The contenders as child processes: the plain TCP relay (tokio copy_bidirectional, the
//! ceiling for any passthrough relay), wsdrain, nginx and HAProxy, plus installing the
//! Debian packages they come from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::process::{Proc, addr, free_port, self_cmd};
use super::wsdrain_bin;

pub async fn tcp_relay(listen: u16, upstream: u16) {
    let listener = TcpListener::bind(addr(listen)).await.expect("bind relay");
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut app) = TcpStream::connect(addr(upstream)).await else {
                return;
            };
            let _ = app.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
        });
    }
}

pub fn spawn_echo_app(port: u16) -> Proc {
    Proc::spawn(
        "echo-app",
        self_cmd(&["__echo-app", &port.to_string()]),
        None,
    )
}

pub fn spawn_tcp_relay(port: u16, app: u16) -> Proc {
    Proc::spawn(
        "tcp-relay",
        self_cmd(&["__tcp-relay", &port.to_string(), &app.to_string()]),
        None,
    )
}

pub fn spawn_wsdrain(port: u16, app: u16, extra: &[&str]) -> Proc {
    spawn_wsdrain_bin(&wsdrain_bin(), port, app, extra)
}

/// [`spawn_wsdrain`] with another build: `WSDRAIN_BIN_B` in the proxies bench, so two
/// builds of wsdrain are compared round by round in one run.
pub fn spawn_wsdrain_bin(bin: &Path, port: u16, app: u16, extra: &[&str]) -> Proc {
    let admin = free_port();
    let mut c = Command::new(bin);
    c.args([
        "proxy",
        "--listen",
        &addr(port).to_string(),
        "--upstream",
        &addr(app).to_string(),
        "--admin",
        &addr(admin).to_string(),
        "--max-connections",
        "9000",
        "--log-level",
        "warn",
    ]);
    c.args(extra);
    Proc::spawn("wsdrain", c, None)
}

pub(super) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wsdrain-bench-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Makes sure `bin` is installed: when absent, `apt-get install -y <pkg>` (as root).
/// Returns false (and says why) when it cannot be had.
pub fn ensure_installed(bin: &str, pkg: &str) -> bool {
    let found = |b: &str| {
        [
            "/usr/sbin/",
            "/usr/bin/",
            "/usr/local/sbin/",
            "/usr/local/bin/",
        ]
        .iter()
        .any(|d| Path::new(&format!("{d}{b}")).exists())
    };
    if found(bin) {
        return true;
    }
    eprintln!("{bin} not found: apt-get install -y {pkg}");
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["install", "-y", "-qq", "--no-install-recommends", pkg]) {
        ok(&["update", "-qq"]);
        ok(&["install", "-y", "-qq", "--no-install-recommends", pkg]);
    }
    if !found(bin) {
        eprintln!("{bin} is not available: its figures are skipped");
        return false;
    }
    // Debian starts the packaged service on install; the bench runs its own copy.
    let _ = Command::new("service").args([bin, "stop"]).status();
    true
}

pub(super) fn bin_path(bin: &str) -> String {
    [
        "/usr/sbin/",
        "/usr/bin/",
        "/usr/local/sbin/",
        "/usr/local/bin/",
    ]
    .iter()
    .map(|d| format!("{d}{bin}"))
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| bin.to_string())
}

/// nginx in the foreground, two workers, WebSocket proxying as its docs describe
/// (`proxy_http_version 1.1` and the Upgrade/Connection headers).
pub fn spawn_nginx(port: u16, app: u16) -> Proc {
    let dir = temp_dir("nginx");
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 40000;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{app};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"#
    );
    // Workers of a root master run as `nobody`: let them use the temp dirs.
    let _ = Command::new("chmod").args(["-R", "777"]).arg(&dir).status();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut c = Command::new(bin_path("nginx"));
    c.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf"));
    c.stderr(Stdio::null());
    Proc::spawn("nginx", c, Some(dir))
}

/// HAProxy in the foreground (`-db`), two threads, HTTP mode: WebSocket upgrades
/// switch to tunnel mode by themselves; `timeout tunnel` as its docs recommend.
/// `spread` sets `close-spread-time` and `hard-stop-after` for the drain bench.
pub fn spawn_haproxy(port: u16, app: u16, spread: Option<(Duration, Duration)>) -> Proc {
    haproxy_with(port, app, spread, "")
}

/// HAProxy terminating TLS (OpenSSL) with the bench's certificate, ALPN `http/1.1`.
pub fn spawn_haproxy_tls(port: u16, app: u16) -> Proc {
    let pem = super::tls::bench_tls().dir.join("combined.pem");
    let ssl = format!(" ssl crt {} alpn http/1.1", pem.display());
    haproxy_with(port, app, None, &ssl)
}

/// HAProxy in front of `app`; `bind_extra` goes on the `bind` line (TLS).
fn haproxy_with(
    port: u16,
    app: u16,
    spread: Option<(Duration, Duration)>,
    bind_extra: &str,
) -> Proc {
    let dir = temp_dir("haproxy");
    let stop = match spread {
        Some((spread, hard)) => format!(
            "    close-spread-time {}ms\n    hard-stop-after {}ms\n",
            spread.as_millis(),
            hard.as_millis()
        ),
        None => String::new(),
    };
    let conf = format!(
        r#"global
    maxconn 9000
    nbthread 2
{stop}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:{port}{bind_extra}
    default_backend app

backend app
    server app 127.0.0.1:{app}
"#
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let mut c = Command::new(bin_path("haproxy"));
    c.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        c.stderr(Stdio::null());
    }
    Proc::spawn("haproxy", c, Some(dir))
}
