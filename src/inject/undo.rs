//! Undoing an injection: `wsdrain uninject`, and `--upgrade` (uninject the old sidecar,
//! inject the new one).
//!
//! Removing the sidecar container and its token volume is easy (they carry wsdrain's
//! names); the hard part is restoring what injection *changed*: a renamed app port and
//! everything pointing at it, a raised grace period, a new preStop hook, annotations that
//! replaced the pod's own. Guessing those back from the injected pod cannot be exact, so
//! injection records them: the pod carries `wsdrain.io/undo`, a JSON Patch from the
//! injected pod (minus the sidecar container and volume) back to the original. Ops
//! addressing an array element are preceded by a `test` op, so a pod changed since
//! injection (another webhook reordered the containers) is refused with a reason instead
//! of being "restored" into something else. Only names and scalar values are tested:
//! the API server's defaulting adds fields (`scheme: HTTP` to a preStop `httpGet`)
//! before a webhook sees the pod, so whole objects would never compare equal.
//!
//! Flow: the original and the injected pod in at injection (the record goes out as an
//! annotation); an injected pod in at `uninject`, the original out.

use serde_json::{Map, Value};

use super::{
    INJECTED_ANNOTATION, InjectConfig, UNDO_ANNOTATION, VERSION, VERSION_ANNOTATION, container,
};

/// Why a pod cannot be uninjected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UninjectError {
    /// The pod was not injected (no `wsdrain.io/injected`).
    #[error("not injected by wsdrain")]
    NotInjected,
    /// Injected by a wsdrain that kept no record (0.1.0 or earlier).
    #[error(
        "no {UNDO_ANNOTATION} annotation (injected by wsdrain 0.1.0 or earlier): re-inject from the original manifest"
    )]
    NoRecord,
    /// The record is not a JSON Patch.
    #[error("{UNDO_ANNOTATION} is not a valid JSON Patch: {0}")]
    BadRecord(String),
    /// The pod changed since injection in a way the record does not fit.
    #[error("the pod changed since injection ({0}); not uninjected")]
    Changed(String),
}

/// Adds [`UNDO_ANNOTATION`] to `patched` (the injected `original`).
pub fn record(original: &Map<String, Value>, patched: &mut Map<String, Value>) {
    let mut core = patched.clone();
    strip_additions(&mut core);
    let ops = json_patch::diff(
        &Value::Object(core.clone()),
        &Value::Object(original.clone()),
    );
    let ops = serde_json::to_value(ops).unwrap_or(Value::Array(Vec::new()));
    let core = Value::Object(core);
    let mut out = Vec::new();
    let mut named = std::collections::HashSet::new();
    for op in ops.as_array().into_iter().flatten() {
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        // A container addressed by index: check it is still the same one (by name;
        // the API server's defaulting adds fields, never renames).
        let segs: Vec<&str> = path.split('/').collect();
        if segs.len() > 4
            && segs[1] == "spec"
            && matches!(segs[2], "containers" | "initContainers")
            && segs[3].chars().all(|c| c.is_ascii_digit())
        {
            let name_path = format!("/spec/{}/{}/name", segs[2], segs[3]);
            if let Some(name) = core.pointer(&name_path)
                && named.insert(name_path.clone())
            {
                out.push(serde_json::json!({"op": "test", "path": name_path, "value": name}));
            }
        }
        // A scalar about to be changed: check it is what injection left.
        let through_array = segs
            .iter()
            .any(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()));
        if through_array
            && matches!(kind, "remove" | "replace")
            && let Some(value) = core
                .pointer(path)
                .filter(|v| !v.is_object() && !v.is_array())
        {
            out.push(serde_json::json!({"op": "test", "path": path, "value": value}));
        }
        out.push(op.clone());
    }
    let text = serde_json::to_string(&out).unwrap_or_else(|_| "[]".into());
    if let Some(ann) = patched
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        ann.insert(UNDO_ANNOTATION.into(), Value::String(text));
    }
}

/// Removes the sidecar container (native or classic), the token volume and the TLS
/// Secret's volume.
fn strip_additions(pod: &mut Map<String, Value>) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let named = |v: &Value, name: &str| v.get("name").and_then(Value::as_str) == Some(name);
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.retain(|c| !named(c, container::SIDECAR_NAME));
        }
    }
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vs.retain(|v| !named(v, container::TOKEN_VOLUME) && !named(v, container::TLS_VOLUME));
    }
}

/// Turns an injected pod back into the pod it was before injection. On error the pod
/// is unchanged.
pub fn uninject_pod(pod: &mut Map<String, Value>) -> Result<(), UninjectError> {
    let ann = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    if ann.and_then(|a| a.get(INJECTED_ANNOTATION)).is_none() {
        return Err(UninjectError::NotInjected);
    }
    let text = ann
        .and_then(|a| a.get(UNDO_ANNOTATION))
        .and_then(Value::as_str)
        .ok_or(UninjectError::NoRecord)?;
    let ops: json_patch::Patch =
        serde_json::from_str(text).map_err(|e| UninjectError::BadRecord(e.to_string()))?;
    let mut work = pod.clone();
    if let Some(a) = work
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        a.remove(UNDO_ANNOTATION);
    }
    strip_additions(&mut work);
    let mut value = Value::Object(work);
    json_patch::patch(&mut value, &ops).map_err(|e| UninjectError::Changed(e.to_string()))?;
    match value {
        Value::Object(m) => {
            *pod = m;
            Ok(())
        }
        _ => Err(UninjectError::Changed("the result is not an object".into())),
    }
}

/// `major.minor.patch` as numbers; anything after `-` or `+` is ignored.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// True when `pod` (already injected) carries an older sidecar and `cfg.upgrade` asks
/// to replace it. Says why when an upgrade was asked for but is not possible.
pub fn wants_upgrade(
    pod: &Map<String, Value>,
    cfg: &InjectConfig,
    warnings: &mut Vec<String>,
) -> bool {
    if !cfg.upgrade {
        return false;
    }
    let ann = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let Some(theirs) = ann
        .and_then(|a| a.get(VERSION_ANNOTATION))
        .and_then(Value::as_str)
    else {
        warnings.push(format!(
            "injected without {VERSION_ANNOTATION} (wsdrain 0.1.0 or earlier), so there is no record to undo; not upgraded: re-inject from the original manifest"
        ));
        return false;
    };
    match (parse_version(theirs), parse_version(VERSION)) {
        (Some(t), Some(o)) if t < o => true,
        (Some(t), Some(o)) if t > o => {
            warnings.push(format!(
                "injected by wsdrain {theirs}, newer than this {VERSION}; left as is"
            ));
            false
        }
        (Some(_), Some(_)) => false,
        _ => {
            warnings.push(format!(
                "{VERSION_ANNOTATION}: \"{theirs}\" is not a version; not upgraded"
            ));
            false
        }
    }
}
