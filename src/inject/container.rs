//! The sidecar container and the pieces of the pod that point at it (token volume, the
//! TLS Secret's volume, the app's preStop hook), built from the settings of one pod.
//!
//! Kept apart from the decision logic in `mod.rs` so that what the sidecar looks like
//! (flags, probes, security context) can be read in one place. The container args use
//! exactly the flag names of `wsdrain proxy`; the drain's are written by the drain plan's
//! own table (`drain/plan.rs`).
//!
//! Flow: [`super::Settings`] of one pod in; the sidecar container and its volume, probes
//! and hook out, as JSON for `mod.rs` to place.

use serde_json::{Value, json};

use super::settings::Settings;
use crate::drain::plan;

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "wsdrain";
/// Name of the downward-API volume carrying the admin token.
pub const TOKEN_VOLUME: &str = "wsdrain-admin-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/wsdrain";
/// The token file inside [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "admin-token";
/// Name of the volume holding the TLS Secret of `wsdrain.io/tls-secret`.
pub const TLS_VOLUME: &str = "wsdrain-tls";
/// Where the TLS Secret is mounted in the sidecar (`--tls-dir`).
pub const TLS_DIR: &str = "/etc/wsdrain/tls";
/// Name of the sidecar's admin port.
pub const ADMIN_PORT_NAME: &str = "wsdrain-admin";
/// Name of the sidecar's client port when no app port was taken over.
pub const CLIENT_PORT_NAME: &str = "wsdrain";

/// The sidecar container. `client_port_name` is the name taken over from the app (or
/// [`CLIENT_PORT_NAME`]), `upstream` the app's port number.
pub fn sidecar(settings: &Settings, client_port_name: &str, upstream: u16) -> Value {
    let s = settings;
    let mut args = vec![
        "proxy".to_string(),
        format!("--listen=0.0.0.0:{}", s.listen_port),
        format!("--upstream=127.0.0.1:{upstream}"),
        format!("--admin=0.0.0.0:{}", s.admin_port),
    ];
    args.extend(plan::args(&s.drain));
    args.extend([
        format!("--max-connections={}", s.max_connections),
        format!("--max-message-size={}", s.max_message_size),
        format!("--admin-token-file={TOKEN_DIR}/{TOKEN_FILE}"),
        "--log-format=json".to_string(),
    ]);
    let mut env =
        vec![json!({"name": "TOKIO_WORKER_THREADS", "value": s.worker_threads.to_string()})];
    if s.pod_deletion_cost {
        args.push("--pod-deletion-cost".to_string());
        env.push(json!({
            "name": "POD_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }));
    }
    let mut mounts = vec![json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true})];
    if s.tls_secret.is_some() {
        args.push(format!("--tls-dir={TLS_DIR}"));
        mounts.push(json!({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": true}));
    }
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
        "env": env,
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
        "volumeMounts": mounts,
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

/// The Role and RoleBinding that let the pods of `service_account` in `namespace` patch
/// pods, for `--pod-deletion-cost`. RBAC cannot name pods a ReplicaSet has not created
/// yet, so the grant covers every pod of the namespace: the widening `docs/inject.md`
/// describes. Both carry [`GENERATED_LABEL`], so `wsdrain uninject` removes them.
pub fn deletion_cost_rbac(namespace: &str, service_account: &str) -> [Value; 2] {
    let name = format!("wsdrain-pod-deletion-cost-{service_account}");
    let meta = json!({
        "name": name,
        "namespace": namespace,
        "labels": {GENERATED_LABEL: "true"},
    });
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        }),
    ]
}

/// Label of the objects `wsdrain inject` adds besides pod templates (RBAC).
pub const GENERATED_LABEL: &str = "wsdrain.io/generated";

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

/// The volume with the TLS Secret `secret` (`tls.crt`, `tls.key`), for `--tls-dir`.
/// Mounted as a directory, not with `subPath`, so the kubelet's updates reach the
/// sidecar and a renewed certificate is served without a restart. The Secret's default
/// file mode (0644) is kept: the sidecar runs as a non-root user the files do not
/// belong to, and only the sidecar mounts the volume.
pub fn tls_volume(secret: &str) -> Value {
    json!({
        "name": TLS_VOLUME,
        "secret": {"secretName": secret},
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
