//! The sidecar container and the pieces of the pod that point at it (token volume, the
//! app's preStop hook), built from the settings of one pod.
//!
//! Kept apart from the decision logic in `mod.rs` so that what the sidecar looks like
//! (flags, probes, security context) can be read in one place. The container args use
//! exactly the flag names of `wsdrain proxy`.
//!
//! Flow: [`super::Settings`] of one pod in; the sidecar container and its volume, probes
//! and hook out, as JSON for `mod.rs` to place.

use serde_json::{Value, json};

use super::settings::{Settings, format_duration};

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "wsdrain";
/// Name of the downward-API volume carrying the admin token.
pub const TOKEN_VOLUME: &str = "wsdrain-admin-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/wsdrain";
/// The token file inside [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "admin-token";
/// Name of the sidecar's admin port.
pub const ADMIN_PORT_NAME: &str = "wsdrain-admin";
/// Name of the sidecar's client port when no app port was taken over.
pub const CLIENT_PORT_NAME: &str = "wsdrain";

/// The sidecar container. `client_port_name` is the name taken over from the app (or
/// [`CLIENT_PORT_NAME`]), `upstream` the app's port number.
pub fn sidecar(settings: &Settings, client_port_name: &str, upstream: u16) -> Value {
    let s = settings;
    let args = vec![
        "proxy".to_string(),
        format!("--listen=0.0.0.0:{}", s.listen_port),
        format!("--upstream=127.0.0.1:{upstream}"),
        format!("--admin=0.0.0.0:{}", s.admin_port),
        format!("--drain-delay={}", format_duration(s.drain_delay)),
        format!("--drain-window={}", format_duration(s.drain_window)),
        format!("--drain-max-rate={}", s.drain_max_rate),
        format!("--close-timeout={}", format_duration(s.close_timeout)),
        format!("--close-code={}", s.close_code),
        format!("--reconnect-jitter={}", format_duration(s.reconnect_jitter)),
        format!("--max-connections={}", s.max_connections),
        format!("--max-message-size={}", s.max_message_size),
        format!("--admin-token-file={TOKEN_DIR}/{TOKEN_FILE}"),
        "--log-format=json".to_string(),
    ];
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": s.admin_port},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        })
    };
    let mut c = json!({
        "name": SIDECAR_NAME,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": args,
        "env": [
            {"name": "TOKIO_WORKER_THREADS", "value": s.worker_threads.to_string()},
        ],
        "ports": [
            {"name": client_port_name, "containerPort": s.listen_port, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": s.admin_port, "protocol": "TCP"},
        ],
        "resources": resources(s),
        // Startup gates the app container (native sidecars start first); readiness
        // turns the pod unready at once when a drain begins.
        "startupProbe": probe("/healthz", 1, 30),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 1),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
        ],
    });
    if !s.classic
        && let Some(obj) = c.as_object_mut()
    {
        obj.insert("restartPolicy".into(), Value::String("Always".into()));
    }
    c
}

fn resources(s: &Settings) -> Value {
    let pick = |pairs: [(&str, &str); 2]| {
        let m: serde_json::Map<String, Value> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
            .collect();
        m
    };
    let requests = pick([("cpu", &s.cpu_request), ("memory", &s.memory_request)]);
    let limits = pick([("cpu", &s.cpu_limit), ("memory", &s.memory_limit)]);
    let mut r = serde_json::Map::new();
    if !requests.is_empty() {
        r.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        r.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(r)
}

/// The downward-API volume that turns the pod's `wsdrain.io/admin-token` annotation
/// into the file the sidecar reads with `--admin-token-file`.
pub fn token_volume(annotation: &str) -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "downwardAPI": {
            "items": [{
                "path": TOKEN_FILE,
                "fieldRef": {"fieldPath": format!("metadata.annotations['{annotation}']")},
            }],
        },
    })
}

/// The app container's preStop hook: wait on the sidecar's `/prestop` (which starts the
/// drain and answers when it is over), so the app outlives every client connection.
pub fn prestop(admin_port: u16, token: &str) -> Value {
    json!({
        "httpGet": {
            "path": "/prestop",
            "port": admin_port,
            "httpHeaders": [{"name": "Authorization", "value": format!("Bearer {token}")}],
        },
    })
}
