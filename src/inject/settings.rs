//! Injection settings: the defaults from the command line, overridden per pod by
//! `wsdrain.io/<setting>` annotations.
//!
//! Platform teams set the defaults once (flags of `wsdrain inject` / `wsdrain webhook`);
//! an app team tunes its own pods with annotations, without touching the webhook. A bad
//! annotation value must not block a rollout, so it becomes a warning and the default
//! stays. Values are checked with the same parsers as the sidecar's own flags, so
//! whatever passes here also starts the sidecar.
//!
//! Flow: the flags of `inject`/`webhook` and a pod's annotations in; one [`Settings`]
//! per pod out, warnings for bad values.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::InjectDefaults;
use crate::drain::{DrainSettings, plan};
pub use crate::values::format_duration;
use crate::values::{parse_name, parse_quantity, parse_size};

/// Prefix of every wsdrain annotation.
pub const PREFIX: &str = "wsdrain.io/";

/// Annotations that are not settings but known all the same (no "unknown" warning).
const NOT_SETTINGS: &[&str] = &["inject", "injected", "admin-token", "version", "undo"];

/// Everything that shapes one injected sidecar, after annotation overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Sidecar image.
    pub image: String,
    /// Image pull policy: `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// App container to front (`wsdrain.io/container`); `None` = chosen from the ports.
    pub container: Option<String>,
    /// Name of the app port to take over (`wsdrain.io/port`); `None` = `http`,
    /// `websocket` or `ws`.
    pub port: Option<String>,
    /// App port the sidecar relays to (`wsdrain.io/upstream-port`); `None` = the number
    /// of the port taken over, else the app container's first port.
    pub upstream_port: Option<u16>,
    /// Sidecar client port.
    pub listen_port: u16,
    /// Sidecar admin port.
    pub admin_port: u16,
    /// The sidecar's drain plan (every row of [`plan::SETTINGS`]).
    pub drain: DrainSettings,
    /// Sidecar `--max-connections`.
    pub max_connections: u32,
    /// Sidecar `--max-message-size`.
    pub max_message_size: u64,
    /// Resource quantities; empty = not set.
    pub cpu_request: String,
    /// Memory request; empty = not set.
    pub memory_request: String,
    /// CPU limit; empty = not set.
    pub cpu_limit: String,
    /// Memory limit; empty = not set.
    pub memory_limit: String,
    /// `TOKIO_WORKER_THREADS` of the sidecar.
    pub worker_threads: u32,
    /// Regular container instead of a native sidecar.
    pub classic: bool,
    /// Sidecar `--pod-deletion-cost` (annotation `wsdrain.io/pod-deletion-cost`): the
    /// sidecar patches its own pod, and `wsdrain inject` adds the RBAC for it.
    pub pod_deletion_cost: bool,
    /// TLS Secret the sidecar serves `wss://` with (`wsdrain.io/tls-secret`), mounted
    /// read-only and passed as `--tls-dir`; `None` = plaintext.
    pub tls_secret: Option<String>,
    /// Minor version of the target cluster (`--kubernetes-version 1.31` = 31); `None` =
    /// a current cluster. Below 1.32 a named-port takeover forces the classic sidecar.
    pub kubernetes_minor: Option<u32>,
}

impl From<&InjectDefaults> for Settings {
    fn from(d: &InjectDefaults) -> Self {
        Settings {
            image: d.image.clone(),
            image_pull_policy: d.image_pull_policy.clone(),
            container: None,
            port: None,
            upstream_port: None,
            listen_port: d.listen_port,
            admin_port: d.admin_port,
            drain: d.drain.clone(),
            max_connections: d.max_connections,
            max_message_size: d.max_message_size,
            cpu_request: d.cpu_request.clone(),
            memory_request: d.memory_request.clone(),
            cpu_limit: d.cpu_limit.clone(),
            memory_limit: d.memory_limit.clone(),
            worker_threads: d.worker_threads,
            classic: d.classic,
            pod_deletion_cost: false,
            tls_secret: None,
            kubernetes_minor: d.kubernetes_version,
        }
    }
}

impl Settings {
    /// The settings for one pod: `self` (the defaults) overridden by the pod's
    /// `wsdrain.io/<setting>` annotations. Each invalid or unknown annotation adds a
    /// warning and leaves the default in place.
    pub fn with_overrides(
        &self,
        annotations: &Map<String, Value>,
        warnings: &mut Vec<String>,
    ) -> Settings {
        let mut s = self.clone();
        for (key, value) in annotations {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            if NOT_SETTINGS.contains(&name) {
                continue;
            }
            let Some(raw) = value.as_str() else {
                warnings.push(format!("annotation {key} is not a string; ignored"));
                continue;
            };
            if let Err(why) = s.apply(name, raw.trim()) {
                warnings.push(format!(
                    "annotation {key}: \"{raw}\" is not valid ({why}); using the default"
                ));
            }
        }
        if s.listen_port == s.admin_port {
            warnings.push(format!(
                "listen port and admin port are both {}; using the defaults {} and {}",
                s.listen_port, self.listen_port, self.admin_port
            ));
            s.listen_port = self.listen_port;
            s.admin_port = self.admin_port;
        }
        s
    }

    /// Applies one override; the error says what a valid value looks like.
    fn apply(&mut self, name: &str, raw: &str) -> Result<(), String> {
        if let Some(result) = plan::apply(&mut self.drain, name, raw) {
            return result;
        }
        match name {
            "image" => self.image = parse_image(raw)?,
            "image-pull-policy" => {
                self.image_pull_policy = match raw {
                    "Always" | "IfNotPresent" | "Never" => raw.to_string(),
                    _ => return Err("expected Always, IfNotPresent or Never".into()),
                }
            }
            "container" => self.container = Some(parse_name(raw, 63)?),
            "port" => self.port = Some(parse_name(raw, 15)?),
            "upstream-port" => self.upstream_port = Some(parse_port(raw)?),
            "listen-port" => self.listen_port = parse_port(raw)?,
            "admin-port" => self.admin_port = parse_port(raw)?,
            "max-connections" => {
                self.max_connections = match raw.parse::<u32>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err("expected a whole number of at least 1".into()),
                }
            }
            "max-message-size" => self.max_message_size = parse_size(raw)?,
            "cpu-request" => self.cpu_request = parse_quantity(raw)?,
            "memory-request" => self.memory_request = parse_quantity(raw)?,
            "cpu-limit" => self.cpu_limit = parse_quantity(raw)?,
            "memory-limit" => self.memory_limit = parse_quantity(raw)?,
            "worker-threads" => {
                self.worker_threads = match raw.parse::<u32>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return Err("expected a whole number from 1 to 64".into()),
                }
            }
            "tls-secret" => self.tls_secret = Some(parse_name(raw, 253)?),
            "classic" => self.classic = parse_bool(raw)?,
            "pod-deletion-cost" => self.pod_deletion_cost = parse_bool(raw)?,
            _ => return Err("unknown wsdrain setting".into()),
        }
        Ok(())
    }

    /// The most a drain can take: announce + stagger (stretched by the rate limit at
    /// `--max-connections`) + close timeout — the sidecar's own drain plan, asked.
    pub fn drain_bound(&self) -> Duration {
        self.drain.total_length(self.max_connections as usize)
    }
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected \"true\" or \"false\"".into()),
    }
}

fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err("expected a port number from 1 to 65535".into()),
    }
}

fn parse_image(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected an image reference without spaces".into());
    }
    Ok(raw.to_string())
}
