//! The injector: one pure function from a pod (or pod template) and settings to the
//! patched pod and a list of warnings, shared by `wsdrain inject` and the webhook.
//!
//! Users adopt a sidecar only if they never hand-edit pod specs, and they trust it only
//! if both doors (GitOps and admission) give the very same result; so both call
//! [`inject_pod`]. It works on `serde_json::Value` so fields this code does not know
//! survive untouched. It never fails: anything it cannot do safely becomes a warning and
//! the pod is left as it was (or the conflicting piece, such as an existing preStop, is
//! kept).
//!
//! Flow: a pod and [`Settings`] in (from `command.rs` or the webhook's `review.rs`); the
//! patched pod and warnings out.

pub mod command;
pub mod concurrency;
pub mod container;
pub mod documents;
pub mod istio;
pub mod mesh;
pub mod ports;
pub mod settings;
#[cfg(test)]
mod tests;
pub mod undo;

use serde_json::{Map, Value};

pub use documents::{InjectError, Output, inject_documents, uninject_documents};
pub use settings::Settings;

/// Pod annotation that opts a pod in (`"true"`) or out (`"false"`, always wins).
pub const INJECT_ANNOTATION: &str = "wsdrain.io/inject";
/// Pod annotation set on injection; a pod carrying it is never injected again.
pub const INJECTED_ANNOTATION: &str = "wsdrain.io/injected";
/// Pod label that opts a pod in (`enabled`) or out (`disabled`); the webhook's
/// `objectSelector` matches it, so pods without it never reach the webhook.
pub const INJECT_LABEL: &str = "wsdrain.io/inject";
/// Pod label set on injection: what the shipped `PodMonitor`, KEDA trigger and
/// prometheus-adapter rule select, whatever the app's own labels are.
pub const INJECTED_LABEL: &str = "wsdrain.io/injected";
/// Pod annotation with the wsdrain version that injected the pod, for `--upgrade`.
pub const VERSION_ANNOTATION: &str = "wsdrain.io/version";
/// This build's version, written to [`VERSION_ANNOTATION`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Pod annotation holding the JSON Patch that undoes the injection (see `undo.rs`).
pub const UNDO_ANNOTATION: &str = "wsdrain.io/undo";
/// Pod annotation holding the admin token; see `docs/inject.md` for why it lives here.
pub const TOKEN_ANNOTATION: &str = "wsdrain.io/admin-token";
/// Pod annotation with the number of pods of its workload that may drain at once,
/// written under a fleet budget (worked out by `wsdrain inject` from the workload).
pub const CONCURRENT_DRAINS_ANNOTATION: &str = "wsdrain.io/max-concurrent-drains";
/// Seconds added to the drain bound for `terminationGracePeriodSeconds`.
pub const GRACE_MARGIN_SECS: u64 = 10;
/// The grace period Kubernetes applies when a pod does not set one.
const DEFAULT_GRACE_SECS: u64 = 30;

/// Everything the injector needs besides the pod.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// Defaults, before the pod's annotations.
    pub defaults: Settings,
    /// Inject pods that did not opt in (`wsdrain inject --all`).
    pub all: bool,
    /// Admin token for every pod; `None` = a random one per pod.
    pub token: Option<String>,
    /// Replace the sidecar of pods injected by an older wsdrain (`inject --upgrade`;
    /// the webhook always does, on re-creation).
    pub upgrade: bool,
}

/// What happened to one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// An older wsdrain's sidecar was removed and this version's added.
    Upgraded,
    /// The pod already carries `wsdrain.io/injected`: nothing to do.
    AlreadyInjected,
    /// `wsdrain.io/inject: "false"`.
    OptedOut,
    /// Neither the pod, its namespace, nor `--all` asked for injection.
    NotOptedIn,
    /// Injection would conflict with the pod (see the warnings); left unchanged.
    Refused,
}

/// The result of [`inject_pod`] besides the patched pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    /// What happened.
    pub outcome: Outcome,
    /// Things the user should know, one sentence each.
    pub warnings: Vec<String>,
}

/// Injects the sidecar into `pod`, an object with `metadata` and `spec` (a Pod or a
/// workload's pod template). `namespace_opted_in` is true when the pod's namespace has
/// the label `wsdrain.io/inject=enabled`. The pod is changed only when the outcome is
/// [`Outcome::Injected`].
pub fn inject_pod(
    pod: &mut Map<String, Value>,
    cfg: &InjectConfig,
    namespace_opted_in: bool,
) -> PodReport {
    let mut warnings = Vec::new();
    if annotation(pod, INJECTED_ANNOTATION).is_some()
        && undo::wants_upgrade(pod, cfg, &mut warnings)
    {
        return upgrade(pod, cfg, warnings);
    }
    let outcome = match decide(pod, cfg, namespace_opted_in, &mut warnings) {
        Some(outcome) => outcome,
        None => inject_opted_in(pod, cfg, &mut warnings),
    };
    PodReport { outcome, warnings }
}

/// Injects a pod that is to be injected; records how to undo it.
fn inject_opted_in(
    pod: &mut Map<String, Value>,
    cfg: &InjectConfig,
    warnings: &mut Vec<String>,
) -> Outcome {
    let mut patched = pod.clone();
    if apply(&mut patched, cfg, warnings) {
        undo::record(pod, &mut patched);
        *pod = patched;
        Outcome::Injected
    } else {
        Outcome::Refused
    }
}

/// Uninjects an older wsdrain's sidecar and injects this one; on any failure the pod
/// stays as it was, with the reason.
fn upgrade(
    pod: &mut Map<String, Value>,
    cfg: &InjectConfig,
    mut warnings: Vec<String>,
) -> PodReport {
    let old = annotation(pod, VERSION_ANNOTATION)
        .unwrap_or("?")
        .to_string();
    let mut plain = pod.clone();
    if let Err(e) = undo::uninject_pod(&mut plain) {
        warnings.push(format!(
            "cannot upgrade the sidecar of wsdrain {old}: {e}; left as is"
        ));
        return PodReport {
            outcome: Outcome::AlreadyInjected,
            warnings,
        };
    }
    // Keep the pod's admin token: whatever holds it (a GitOps secret, a runbook) stays valid.
    let mut cfg = cfg.clone();
    if let Some(t) =
        annotation(pod, TOKEN_ANNOTATION).filter(|t| crate::values::parse_token(t).is_ok())
    {
        cfg.token = Some(t.trim().to_string());
    }
    let outcome = match inject_opted_in(&mut plain, &cfg, &mut warnings) {
        Outcome::Injected => {
            *pod = plain;
            warnings.push(format!(
                "upgraded the sidecar from wsdrain {old} to {VERSION}"
            ));
            Outcome::Upgraded
        }
        other => other,
    };
    PodReport { outcome, warnings }
}

fn annotation<'a>(pod: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    annotations(pod)?.get(key)?.as_str()
}

/// True when the pod has a container or an init container called `name`.
fn has_container(pod: &Map<String, Value>, name: &str) -> bool {
    let spec = pod.get("spec");
    ["containers", "initContainers"].iter().any(|list| {
        spec.and_then(|s| s.get(*list))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("name").and_then(Value::as_str) == Some(name))
            })
    })
}

fn annotations(pod: &Map<String, Value>) -> Option<&Map<String, Value>> {
    pod.get("metadata")?.get("annotations")?.as_object()
}

/// `Some(outcome)` when the pod is to be left alone, `None` when it is to be injected.
fn decide(
    pod: &Map<String, Value>,
    cfg: &InjectConfig,
    namespace_opted_in: bool,
    warnings: &mut Vec<String>,
) -> Option<Outcome> {
    let ann = annotations(pod);
    let get = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str);
    if get(INJECTED_ANNOTATION).is_some() {
        return Some(Outcome::AlreadyInjected);
    }
    let label = pod
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(INJECT_LABEL))
        .and_then(Value::as_str)
        .map(str::trim);
    let label_asks = match label {
        Some("disabled") => return Some(Outcome::OptedOut),
        Some("enabled") => true,
        Some(v) => {
            warnings.push(format!(
                "label {INJECT_LABEL}={v} is neither \"enabled\" nor \"disabled\"; ignored"
            ));
            false
        }
        None => false,
    };
    let asked = label_asks
        || match get(INJECT_ANNOTATION).map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("false") => return Some(Outcome::OptedOut),
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) => {
                warnings.push(format!(
                "annotation {INJECT_ANNOTATION}: \"{v}\" is neither \"true\" nor \"false\"; ignored"
            ));
                false
            }
            None => false,
        };
    if !(asked || namespace_opted_in || cfg.all) {
        return Some(Outcome::NotOptedIn);
    }
    if has_container(pod, container::SIDECAR_NAME) {
        warnings.push(format!(
            "a container named {} is already there but {INJECTED_ANNOTATION} is missing; not injecting again",
            container::SIDECAR_NAME
        ));
        return Some(Outcome::Refused);
    }
    if pod
        .get("spec")
        .and_then(|s| s.get("hostNetwork"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        warnings.push(
            "hostNetwork pod: the sidecar's ports would be the node's, shared with every other hostNetwork pod there, and a Service's port could not be taken over; not injected".into(),
        );
        return Some(Outcome::Refused);
    }
    let has_containers = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(Value::is_object));
    if !has_containers {
        warnings.push("spec.containers is missing or malformed; not injected".into());
        return Some(Outcome::Refused);
    }
    None
}

/// Injects into a copy of an opted-in pod; false (with a warning) on a conflict.
fn apply(pod: &mut Map<String, Value>, cfg: &InjectConfig, warnings: &mut Vec<String>) -> bool {
    let meshed = istio::meshed(pod);
    let meta = object_at(pod, "metadata");
    let ann = object_at(meta, "annotations").clone();
    let mut settings = cfg.defaults.with_overrides(&ann, warnings);
    let chosen = |name: &str, port: u16| {
        ann.get(&format!("{}{name}", settings::PREFIX))
            .and_then(Value::as_str)
            .and_then(|v| v.trim().parse::<u16>().ok())
            == Some(port)
    };
    if meshed && !istio::avoid_ports(&mut settings, chosen, warnings) {
        return false;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return false;
    };

    // Conflicts that would make a broken pod: refuse, say why.
    let empty = Vec::new();
    let init = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let main = spec
        .get("containers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let everyone: Vec<&Value> = main.iter().chain(init.iter()).collect();
    for (port, what) in [
        (settings.listen_port, "listen"),
        (settings.admin_port, "admin"),
    ] {
        if let Some((_, owner)) = ports::all_numbers(&everyone)
            .iter()
            .find(|(n, _)| *n == port)
        {
            warnings.push(format!(
                "port {port} (the sidecar's {what} port) is already used by container {owner}; set wsdrain.io/{what}-port; not injected"
            ));
            return false;
        }
    }
    let volume_taken = spec
        .get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(container::TOKEN_VOLUME))
        });
    if volume_taken {
        warnings.push(format!(
            "a volume named {} already exists; not injected",
            container::TOKEN_VOLUME
        ));
        return false;
    }

    // Which container and port.
    let default_container = ann
        .get("kubectl.kubernetes.io/default-container")
        .and_then(Value::as_str);
    let takeover = ports::choose(main, &settings, default_container, warnings);
    let mut taken_names = ports::all_names(&everyone);
    let app_index = takeover.container;
    let app_name = main[app_index]
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let upstream = match (settings.upstream_port, &takeover.port) {
        (Some(p), _) => p,
        (None, Some(taken)) => taken.number,
        (None, None) => match ports::first_tcp_port(&main[app_index]) {
            Some(p) => p,
            None => {
                warnings.push(format!(
                    "container {app_name} declares no port; relaying to 8080 (set wsdrain.io/upstream-port)"
                ));
                8080
            }
        },
    };
    let client_port_name = match &takeover.port {
        Some(taken) => taken.name.clone(),
        None if taken_names.contains(container::CLIENT_PORT_NAME) => {
            warnings.push(format!(
                "port name {} is already used; the sidecar's client port is unnamed",
                container::CLIENT_PORT_NAME
            ));
            String::new()
        }
        None => container::CLIENT_PORT_NAME.to_string(),
    };
    if taken_names.contains(container::ADMIN_PORT_NAME) {
        warnings.push(format!(
            "port name {} is already used by another container; not injected",
            container::ADMIN_PORT_NAME
        ));
        return false;
    }

    // Token: keep a valid one already on the pod, else the configured or a random one.
    let token = match ann.get(TOKEN_ANNOTATION).and_then(Value::as_str) {
        Some(t) if crate::values::parse_token(t).is_ok() => t.trim().to_string(),
        existing => {
            if existing.is_some() {
                warnings.push(format!(
                    "annotation {TOKEN_ANNOTATION} is not a valid token (16-256 characters of A-Z a-z 0-9 -._~+/=); replaced"
                ));
            }
            cfg.token.clone().unwrap_or_else(random_token)
        }
    };

    // The app container: port takeover, preStop.
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
        return false;
    };
    let Some(app) = containers.get_mut(app_index).and_then(Value::as_object_mut) else {
        return false;
    };
    if let Some(minor) = settings.kubernetes_minor
        && !settings.classic
    {
        if minor < 29 {
            warnings.push(format!(
                "Kubernetes 1.{minor} has no native sidecars (1.29+): injected the classic sidecar"
            ));
            settings.classic = true;
        } else if minor < 32
            && let Some(taken) = &takeover.port
        {
            warnings.push(format!(
                "Kubernetes 1.{minor}: a Service's targetPort '{}' reaches a native sidecar only from 1.32, so this pod gets the classic sidecar",
                taken.name
            ));
            settings.classic = true;
        }
    }
    if let Some(taken) = &takeover.port {
        let new_name = ports::new_app_name(&taken.name, &taken_names);
        taken_names.insert(new_name.clone());
        ports::rename(app, taken.index, &taken.name, &new_name);
        if !settings.classic && settings.kubernetes_minor.is_none() {
            // Endpoints resolve a named targetPort on init containers only from 1.32 on.
            warnings.push(format!(
                "port name '{}' moved to the native sidecar: a Service with targetPort '{}' reaches it on Kubernetes 1.32+ only; on 1.29-1.31 use targetPort {} or the classic sidecar (--classic, annotation wsdrain.io/classic: \"true\")",
                taken.name, taken.name, settings.listen_port
            ));
        }
    }
    let lifecycle = object_at(app, "lifecycle");
    if lifecycle.contains_key("preStop") {
        warnings.push(format!(
            "container {app_name} already has a preStop hook; kept it, so it does not wait for the drain: make it call GET :{}/prestop (or `wsdrain drain --wait`)",
            settings.admin_port
        ));
    } else {
        lifecycle.insert(
            "preStop".into(),
            container::prestop(settings.admin_port, &token),
        );
    }

    // Time for the whole drain before the kubelet kills the pod; under a fleet budget
    // the sidecar is told the grace period, so its stretched stagger ends within it.
    let need = settings.drain_bound().as_secs_f64().ceil() as u64 + GRACE_MARGIN_SECS;
    let current = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64);
    let grace = need.max(current.unwrap_or(DEFAULT_GRACE_SECS));
    let fleet_budget = settings.drain.fleet_max_rate > 0.0;
    if fleet_budget {
        settings.drain.grace_period = std::time::Duration::from_secs(grace);
    }

    // The sidecar, native (init container, restartPolicy Always) or classic.
    let mut sidecar = container::sidecar(&settings, &client_port_name, upstream);
    if client_port_name.is_empty()
        && let Some(p) = sidecar
            .pointer_mut("/ports/0")
            .and_then(Value::as_object_mut)
    {
        p.remove("name");
    }
    let restart = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if settings.classic && restart != "Always" {
        warnings.push(format!(
            "classic sidecar in a pod with restartPolicy {restart} (a Job?): it keeps running after the app exits, so the pod never completes; use the native sidecar"
        ));
    }
    let list = if settings.classic {
        "containers"
    } else {
        "initContainers"
    };
    array_at(spec, list).push(sidecar);
    array_at(spec, "volumes").push(container::token_volume(TOKEN_ANNOTATION));
    if let Some(secret) = &settings.tls_secret {
        array_at(spec, "volumes").push(container::tls_volume(secret));
    }

    if current.unwrap_or(DEFAULT_GRACE_SECS) < need || current.is_none() {
        spec.insert("terminationGracePeriodSeconds".into(), Value::from(grace));
    }

    // A classic mesh proxy must outlive the drain.
    let mesh_wait = settings.drain_bound().as_secs_f64().ceil() as u64 + mesh::MESH_MARGIN_SECS;
    mesh::outlive_drain(pod, mesh_wait, warnings);

    // The label monitoring selects.
    object_at(object_at(pod, "metadata"), "labels")
        .insert(INJECTED_LABEL.into(), Value::String("true".into()));

    // Annotations: token, scrape hints, the mark.
    let ann = object_at(object_at(pod, "metadata"), "annotations");
    ann.insert(TOKEN_ANNOTATION.into(), Value::String(token));
    add_prometheus(ann, settings.admin_port, warnings);
    if meshed {
        istio::exclude_from_capture(ann, settings.admin_port, warnings);
    }
    // Under a fleet budget, the K the sidecar drains with, for the webhook and people.
    if fleet_budget {
        ann.entry(CONCURRENT_DRAINS_ANNOTATION)
            .or_insert_with(|| Value::String(settings.drain.max_concurrent_drains.to_string()));
    }
    ann.insert(INJECTED_ANNOTATION.into(), Value::String("true".into()));
    ann.insert(VERSION_ANNOTATION.into(), Value::String(VERSION.into()));
    true
}

/// `prometheus.io/*` annotations for the admin port, unless the pod already has its own
/// (a pod can only advertise one port that way; clobbering would hide the app's metrics).
fn add_prometheus(ann: &mut Map<String, Value>, admin_port: u16, warnings: &mut Vec<String>) {
    let port = admin_port.to_string();
    match ann.get("prometheus.io/port").and_then(Value::as_str) {
        Some(p) if p == port => {}
        Some(p) => {
            warnings.push(format!(
                "pod already has prometheus.io/port: \"{p}\"; kept it, so annotation-based scraping misses the sidecar: scrape port {port} (wsdrain-admin) with a PodMonitor"
            ));
            return;
        }
        None if ann.contains_key("prometheus.io/scrape")
            || ann.contains_key("prometheus.io/path") =>
        {
            warnings.push("pod already has prometheus.io annotations; kept them".into());
            return;
        }
        None => {}
    }
    ann.insert("prometheus.io/scrape".into(), Value::String("true".into()));
    ann.insert("prometheus.io/port".into(), Value::String(port));
    ann.insert(
        "prometheus.io/path".into(),
        Value::String("/metrics".into()),
    );
}

/// 32 random bytes as 64 hex characters.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `map[key]` as an object, created (or replaced, when it is `null`) as needed.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// `map[key]` as an array, created (or replaced, when it is `null`) as needed.
fn array_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}
