//! Named-port takeover: which container is the app, which of its ports the sidecar takes
//! over, and the renaming that makes a Service reach the sidecar without edits.
//!
//! A Service with `targetPort: websocket` resolves the name among the pod's container
//! ports. If the app's port `websocket` is renamed (to `app-websocket`) and the sidecar
//! declares a port named `websocket`, the same Service now sends clients to the sidecar,
//! which relays to the app's port number on 127.0.0.1. Probes and hooks of the app that
//! named the old port are rewritten to the new name, since a name in a probe resolves
//! only among the ports of its own container.
//!
//! Kubernetes resolves a Service's named `targetPort` on a *native* sidecar (an init
//! container) only from 1.32 on (kubernetes PRs 127976 and 128850); on 1.29-1.31 the
//! classic mode (`--classic`, `wsdrain.io/classic: "true"`) is the one where takeover
//! works. `docs/inject.md` says so.
//!
//! Flow: a pod in; out, the app container, the port taken over, and the renames applied
//! to the pod.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::settings::Settings;

/// Port names tried, in order, when `wsdrain.io/port` is not set.
pub const DEFAULT_PORT_NAMES: &[&str] = &["http", "websocket", "ws"];

/// The app container and the port of it the sidecar takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// Index of the app container in `spec.containers`.
    pub container: usize,
    /// The port taken over, if a named port was found.
    pub port: Option<TakenPort>,
}

/// One app port taken over by the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenPort {
    /// Index in the app container's `ports`.
    pub index: usize,
    /// Its original name, which the sidecar's client port takes.
    pub name: String,
    /// Its container port number: where the sidecar relays to.
    pub number: u16,
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn ports_of(container: &Value) -> &[Value] {
    container
        .get("ports")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn is_tcp(port: &Value) -> bool {
    port.get("protocol")
        .and_then(Value::as_str)
        .is_none_or(|p| p == "TCP")
}

fn number_of(port: &Value) -> Option<u16> {
    port.get("containerPort")
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// Finds the app container and the port to take over (see the module doc).
/// `default_container` is the pod's `kubectl.kubernetes.io/default-container`.
pub fn choose(
    containers: &[Value],
    settings: &Settings,
    default_container: Option<&str>,
    warnings: &mut Vec<String>,
) -> Takeover {
    let by_name = |wanted: &str| containers.iter().position(|c| name_of(c) == Some(wanted));
    let mut pinned = None;
    if let Some(wanted) = &settings.container {
        pinned = by_name(wanted);
        if pinned.is_none() {
            warnings.push(format!(
                "annotation wsdrain.io/container names \"{wanted}\", which is not a container of this pod; choosing the app container from its ports"
            ));
        }
    }
    let candidates: Vec<usize> = match pinned {
        Some(i) => vec![i],
        None => (0..containers.len()).collect(),
    };
    let find = |port_name: &str| {
        candidates.iter().find_map(|&ci| {
            ports_of(&containers[ci])
                .iter()
                .position(|p| name_of(p) == Some(port_name) && is_tcp(p))
                .and_then(|pi| {
                    number_of(&ports_of(&containers[ci])[pi]).map(|number| {
                        (
                            ci,
                            TakenPort {
                                index: pi,
                                name: port_name.to_string(),
                                number,
                            },
                        )
                    })
                })
        })
    };
    let found = match &settings.port {
        Some(wanted) => {
            let found = find(wanted);
            if found.is_none() {
                warnings.push(format!(
                    "annotation wsdrain.io/port names \"{wanted}\", but no container has a TCP port of that name; no port taken over: point the Service at port {} or name it wsdrain",
                    settings.listen_port
                ));
            }
            found
        }
        None => {
            let found = DEFAULT_PORT_NAMES.iter().find_map(|n| find(n));
            if found.is_none() {
                warnings.push(format!(
                    "no container port named http, websocket or ws (set wsdrain.io/port to take one over); the Service must target port {} (named wsdrain) to reach the sidecar",
                    settings.listen_port
                ));
            }
            found
        }
    };
    match found {
        Some((container, port)) => Takeover {
            container,
            port: Some(port),
        },
        None => Takeover {
            container: pinned
                .or_else(|| default_container.and_then(by_name))
                .unwrap_or(0),
            port: None,
        },
    }
}

/// The first TCP port number of a container, the upstream when no port is taken over.
pub fn first_tcp_port(container: &Value) -> Option<u16> {
    ports_of(container)
        .iter()
        .filter(|p| is_tcp(p))
        .find_map(number_of)
}

/// Every port name declared by any container of the pod.
pub fn all_names(containers: &[&Value]) -> BTreeSet<String> {
    containers
        .iter()
        .flat_map(|c| ports_of(c).iter().filter_map(name_of))
        .map(str::to_string)
        .collect()
}

/// Every port number declared by any container, with the container's name.
pub fn all_numbers(containers: &[&Value]) -> Vec<(u16, String)> {
    containers
        .iter()
        .flat_map(|c| {
            let cname = name_of(c).unwrap_or("?").to_string();
            ports_of(c)
                .iter()
                .filter_map(number_of)
                .map(move |n| (n, cname.clone()))
        })
        .collect()
}

/// A new, unused, valid (at most 15 characters) name for the app's port `old`.
pub fn new_app_name(old: &str, taken: &BTreeSet<String>) -> String {
    let first = format!("app-{old}");
    let base = if first.len() <= 15 {
        first
    } else {
        "wsdrain-app".to_string()
    };
    if !taken.contains(&base) {
        return base;
    }
    let stem: String = base.chars().take(12).collect();
    (2..1000)
        .map(|i| format!("{}-{i}", stem.trim_end_matches('-')))
        .find(|n| !taken.contains(n) && n.len() <= 15)
        .unwrap_or_else(|| "wsd-app-x".to_string())
}

/// Renames port `index` of `container` to `new`, and every probe or lifecycle handler of
/// the container that named it.
pub fn rename(container: &mut Map<String, Value>, index: usize, old: &str, new: &str) {
    if let Some(port) = container
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .and_then(|ports| ports.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        port.insert("name".into(), Value::String(new.to_string()));
    }
    let mut handlers: Vec<&mut Value> = Vec::new();
    for (key, value) in container.iter_mut() {
        match key.as_str() {
            "readinessProbe" | "livenessProbe" | "startupProbe" => handlers.push(value),
            "lifecycle" => {
                if let Some(hooks) = value.as_object_mut() {
                    handlers.extend(hooks.values_mut());
                }
            }
            _ => {}
        }
    }
    for handler in handlers {
        for kind in ["httpGet", "tcpSocket"] {
            if let Some(port) = handler.get_mut(kind).and_then(|h| h.get_mut("port"))
                && port.as_str() == Some(old)
            {
                *port = Value::String(new.to_string());
            }
        }
    }
}
