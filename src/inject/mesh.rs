//! Service-mesh proxies that must outlive the drain.
//!
//! A *classic* mesh proxy (a regular container named `istio-proxy` or `linkerd-proxy`)
//! gets SIGTERM at the same moment as the app and wsdrain. If it exits at once, every
//! client connection still being drained through it is cut, which is the reconnect
//! storm wsdrain exists to prevent. Each mesh has a setting that keeps its proxy up for a
//! while after SIGTERM; the injector sets it to cover the drain, or says why it cannot.
//! A native mesh sidecar (an init container) needs nothing: Kubernetes stops sidecars in
//! reverse start order, after the app, and wsdrain's sidecar comes after the mesh's.
//!
//! - Istio: `terminationDrainDuration` in the pod annotation `proxy.istio.io/config`
//!   (read when Istio injects) and, as Istio has already rendered the proxy here, in the
//!   proxy's `PROXY_CONFIG` environment variable (what pilot-agent reads at start).
//! - Linkerd: the pod annotation `config.alpha.linkerd.io/proxy-wait-before-exit-seconds`
//!   and what Linkerd renders for it, a `preStop` sleep on `linkerd-proxy`.

use serde_json::{Map, Value, json};

use super::settings::format_duration;
use crate::values::parse_duration;

/// Seconds a mesh proxy waits beyond the drain bound.
pub const MESH_MARGIN_SECS: u64 = 5;
/// Istio's per-pod proxy configuration annotation.
pub const ISTIO_CONFIG: &str = "proxy.istio.io/config";
/// Linkerd's per-pod wait-before-exit annotation.
pub const LINKERD_WAIT: &str = "config.alpha.linkerd.io/proxy-wait-before-exit-seconds";

fn classic<'a>(pod: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Map<String, Value>> {
    pod.get_mut("spec")?
        .get_mut("containers")?
        .as_array_mut()?
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

fn annotations(pod: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    pod.get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()
}

/// Makes a classic `istio-proxy` or `linkerd-proxy` in `pod` wait `secs` seconds after
/// SIGTERM. Called after the annotations map exists.
pub fn outlive_drain(pod: &mut Map<String, Value>, secs: u64, warnings: &mut Vec<String>) {
    if classic(pod, "istio-proxy").is_some() {
        istio(pod, secs, warnings);
    }
    if classic(pod, "linkerd-proxy").is_some() {
        linkerd(pod, secs, warnings);
    }
}

fn istio(pod: &mut Map<String, Value>, secs: u64, warnings: &mut Vec<String>) {
    let want = format_duration(std::time::Duration::from_secs(secs));
    // The annotation: YAML (usually a one-line map) of Istio's ProxyConfig.
    if let Some(ann) = annotations(pod) {
        let current = ann.get(ISTIO_CONFIG).and_then(Value::as_str).unwrap_or("");
        match serde_yaml_ng::from_str::<Option<Map<String, Value>>>(current) {
            Ok(map) => {
                let mut map = map.unwrap_or_default();
                if raise(&mut map, secs, &want) {
                    let text = serde_json::to_string(&Value::Object(map)).unwrap_or_default();
                    ann.insert(ISTIO_CONFIG.into(), Value::String(text));
                }
            }
            Err(e) => warnings.push(format!(
                "annotation {ISTIO_CONFIG} is not a YAML map ({e}); left it, so set terminationDrainDuration: {want} there yourself or istio-proxy exits before the drain ends"
            )),
        }
    }
    // The rendered proxy: pilot-agent reads PROXY_CONFIG (JSON) at start.
    let Some(proxy) = classic(pod, "istio-proxy") else {
        return;
    };
    let env = proxy
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .and_then(|env| {
            env.iter_mut()
                .find(|e| e.get("name").and_then(Value::as_str) == Some("PROXY_CONFIG"))
        });
    let Some(entry) = env else {
        warnings.push(format!(
            "istio-proxy has no PROXY_CONFIG variable; set {ISTIO_CONFIG} before Istio injects the pod, or istio-proxy may exit before the drain ends"
        ));
        return;
    };
    let parsed = entry
        .get("value")
        .and_then(Value::as_str)
        .map(serde_json::from_str::<Map<String, Value>>);
    match parsed {
        Some(Ok(mut map)) => {
            if raise(&mut map, secs, &want)
                && let Some(obj) = entry.as_object_mut()
            {
                let text = serde_json::to_string(&Value::Object(map)).unwrap_or_default();
                obj.insert("value".into(), Value::String(text));
            }
        }
        _ => warnings.push(
            "istio-proxy's PROXY_CONFIG is not a JSON object; left it, so istio-proxy may exit before the drain ends".into(),
        ),
    }
}

/// Sets `terminationDrainDuration` to `want` unless it is already at least `secs`.
/// True when it changed.
fn raise(map: &mut Map<String, Value>, secs: u64, want: &str) -> bool {
    let current = map
        .get("terminationDrainDuration")
        .and_then(Value::as_str)
        .and_then(|d| parse_duration(d).ok());
    if current.is_some_and(|d| d.as_secs() >= secs) {
        return false;
    }
    map.insert(
        "terminationDrainDuration".into(),
        Value::String(want.to_string()),
    );
    true
}

fn linkerd(pod: &mut Map<String, Value>, secs: u64, warnings: &mut Vec<String>) {
    if let Some(ann) = annotations(pod) {
        let current = ann.get(LINKERD_WAIT).and_then(Value::as_str);
        match current.map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if n >= secs => {}
            Some(Err(_)) => warnings.push(format!(
                "annotation {LINKERD_WAIT} is not a number; replaced it with {secs}"
            )),
            _ => {}
        }
        if !matches!(current.map(|v| v.trim().parse::<u64>()), Some(Ok(n)) if n >= secs) {
            ann.insert(LINKERD_WAIT.into(), Value::String(secs.to_string()));
        }
    }
    let Some(proxy) = classic(pod, "linkerd-proxy") else {
        return;
    };
    let sleep = json!({"exec": {"command": ["/bin/sleep", secs.to_string()]}});
    let lifecycle = proxy
        .entry("lifecycle")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(lifecycle) = lifecycle.as_object_mut() else {
        warnings.push("linkerd-proxy's lifecycle is not an object; left it, so linkerd-proxy may exit before the drain ends".into());
        return;
    };
    let existing = lifecycle
        .get("preStop")
        .and_then(|p| p.pointer("/exec/command"));
    let slept = existing
        .and_then(Value::as_array)
        .filter(|c| c.len() == 2 && c[0].as_str() == Some("/bin/sleep"))
        .and_then(|c| c[1].as_str().and_then(|n| n.parse::<u64>().ok()));
    match (lifecycle.contains_key("preStop"), slept) {
        (false, _) => {
            lifecycle.insert("preStop".into(), sleep);
        }
        (true, Some(n)) if n < secs => {
            lifecycle.insert("preStop".into(), sleep);
        }
        (true, Some(_)) => {}
        (true, None) => warnings.push(format!(
            "linkerd-proxy already has its own preStop hook; kept it, so make it wait {secs}s or linkerd-proxy may exit before the drain ends"
        )),
    }
}
