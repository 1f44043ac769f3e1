//! Istio's ports: keep the sidecar off the ports istio-proxy binds in the same pod.
//!
//! Every container of a pod shares one network namespace, and Istio's proxy binds a
//! fixed set of ports there, 15090 (Envoy's Prometheus endpoint) among them, which is
//! also wsdrain's default admin port. Two processes cannot both bind it: whichever
//! starts second fails, so a meshed pod injected with the defaults never becomes ready.
//!
//! The injector can only see Istio when the pod says so: an `istio-proxy` container
//! (Istio's injector ran first), Istio's status annotation, or the pod label or
//! annotation `sidecar.istio.io/inject: "true"`. A namespace-wide
//! `istio-injection=enabled` label is not part of the pod; `docs/inject.md` tells those
//! users to set the admin port (or use `deploy/mesh/istio`). When Istio is visible, a
//! default admin port on Istio's list moves to [`ISTIO_ADMIN_PORT`] (the one the Istio
//! kit in `deploy/mesh/istio` uses), and a port the pod's annotations chose on Istio's
//! list refuses the injection with the reason: silently moving a port the user picked
//! would break whatever they pointed at it.
//!
//! In a meshed pod the admin port is also added to Istio's
//! `traffic.sidecar.istio.io/excludeInboundPorts`: the kubelet's probes and the app's
//! preStop `GET /prestop` are plain HTTP from the node, which STRICT mTLS would refuse if
//! Envoy captured the port. Istio reads that annotation when it sets up the pod's
//! traffic capture: always with the Istio CNI plugin, and with `istio-init` only when
//! Istio's injector runs after wsdrain's (as with `wsdrain inject` in a GitOps pipeline).
//!
//! Flow: a pod in; out, whether it is meshed and the admin port it must use (or the
//! reason it cannot be injected).

use serde_json::{Map, Value};

use super::settings::Settings;

/// Ports istio-proxy binds inside the pod (Istio's "Ports used by Istio" table).
pub const ISTIO_PORTS: &[u16] = &[
    15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090,
];

/// The admin port used in an Istio pod: the first free one after Istio's range.
pub const ISTIO_ADMIN_PORT: u16 = 15091;

/// True when the pod shows it is (or will be) part of an Istio mesh.
pub fn meshed(pod: &Map<String, Value>) -> bool {
    let meta = pod.get("metadata");
    let says_inject = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(|m| m.get("sidecar.istio.io/inject"))
            .and_then(Value::as_str)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    let injected = meta
        .and_then(|m| m.get("annotations"))
        .is_some_and(|a| a.get("sidecar.istio.io/status").is_some());
    says_inject("labels")
        || says_inject("annotations")
        || injected
        || super::has_container(pod, "istio-proxy")
}

/// Keeps `settings` off Istio's ports in a meshed pod. `chosen(name, port)` is true when
/// the pod's annotation `wsdrain.io/<name>` set that port. Returns false (with a warning)
/// when a port is Istio's and cannot be moved, and the pod must not be injected.
pub fn avoid_ports(
    settings: &mut Settings,
    chosen: impl Fn(&str, u16) -> bool,
    warnings: &mut Vec<String>,
) -> bool {
    let admin = settings.admin_port;
    if ISTIO_PORTS.contains(&admin) && !chosen("admin-port", admin) {
        warnings.push(format!(
            "Istio pod: admin port {admin} is istio-proxy's, so the sidecar's admin port is {ISTIO_ADMIN_PORT} (metrics, probes and /prestop follow)"
        ));
        settings.admin_port = ISTIO_ADMIN_PORT;
    }
    for (port, what) in [
        (settings.listen_port, "listen"),
        (settings.admin_port, "admin"),
    ] {
        if ISTIO_PORTS.contains(&port) {
            warnings.push(format!(
                "port {port} (the sidecar's {what} port) is bound by istio-proxy in the same pod; set wsdrain.io/{what}-port to another; not injected"
            ));
            return false;
        }
    }
    if settings.listen_port == settings.admin_port {
        warnings.push(format!(
            "Istio pod: the listen port is {ISTIO_ADMIN_PORT}, the admin port wsdrain moves to there; set wsdrain.io/admin-port; not injected"
        ));
        return false;
    }
    true
}

/// Istio's pod annotation listing inbound ports Envoy does not capture.
pub const EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";

/// Adds `port` to [`EXCLUDE_INBOUND`] in `annotations`, keeping the ports already
/// listed there.
pub fn exclude_from_capture(
    annotations: &mut Map<String, Value>,
    port: u16,
    warnings: &mut Vec<String>,
) {
    let port = port.to_string();
    let list = match annotations.get(EXCLUDE_INBOUND) {
        None => port,
        Some(Value::String(list)) => {
            if list.split(',').any(|p| p.trim() == port) {
                return;
            }
            if list.trim().is_empty() {
                port
            } else {
                format!("{},{port}", list.trim_end_matches([',', ' ']))
            }
        }
        Some(_) => {
            warnings.push(format!(
                "annotation {EXCLUDE_INBOUND} is not a string; left it, so Envoy may capture the admin port {port}"
            ));
            return;
        }
    };
    annotations.insert(EXCLUDE_INBOUND.into(), Value::String(list));
}
