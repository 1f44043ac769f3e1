//! Reading and writing Kubernetes manifests for `wsdrain inject`: YAML or JSON streams,
//! one document after another, and finding the pod templates inside each workload kind.
//!
//! GitOps repositories hold multi-document YAML, `List`s and every workload kind; the
//! injector must find each pod template and leave everything else alone, byte for byte
//! in meaning (field order is kept; YAML comments are not, as no maintained serde YAML
//! crate keeps them). A syntax error names the document and the line, so the user can
//! find it in a long file.
//!
//! Flow: text in (YAML or JSON); pod templates out to the injector, one at a time; the
//! documents back out as text.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::concurrency::{Cluster, Concurrency};
use super::{CONCURRENT_DRAINS_ANNOTATION, InjectConfig, Outcome, inject_pod};

/// Why a manifest stream could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A YAML syntax or structure error.
    #[error("document {document}: invalid YAML at line {line}, column {column}: {message}")]
    Yaml {
        /// 1-based number of the document in the stream.
        document: usize,
        /// 1-based line in the whole input.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A JSON syntax error.
    #[error("document {document}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based number of the document in the stream.
        document: usize,
        /// 1-based line in the whole input.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// YAML that is well formed but cannot be a Kubernetes object (a non-string key).
    #[error("document {document}: {message}")]
    Structure {
        /// 1-based number of the document in the stream.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// The result could not be rendered (a value YAML cannot hold).
    #[error("document {document}: cannot write the result: {message}")]
    Render {
        /// 1-based number of the document.
        document: usize,
        /// What the serializer said.
        message: String,
    },
}

/// Input and output syntax, chosen by the input's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, documents separated by `---`.
    Yaml,
    /// JSON, one or more values one after another.
    Json,
}

/// What `wsdrain inject` prints and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The rewritten stream, in the input's syntax.
    pub text: String,
    /// Warnings, each naming the document and object.
    pub warnings: Vec<String>,
    /// Pod templates injected.
    pub injected: usize,
}

/// Parses a YAML or JSON stream into documents (empty YAML documents are dropped).
pub fn parse(input: &str) -> Result<(Format, Vec<Value>), InjectError> {
    let first = input.trim_start().chars().next();
    if matches!(first, Some('{' | '[')) {
        let mut docs = Vec::new();
        for (i, doc) in serde_json::Deserializer::from_str(input)
            .into_iter::<Value>()
            .enumerate()
        {
            match doc {
                Ok(v) => docs.push(v),
                Err(e) => {
                    return Err(InjectError::Json {
                        document: i + 1,
                        line: e.line(),
                        column: e.column(),
                        message: strip_location(&e.to_string()),
                    });
                }
            }
        }
        return Ok((Format::Json, docs));
    }
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        // Through the YAML crate's own Value first: it rejects duplicate keys (as the
        // API server does), where a JSON map would silently keep the last one.
        match serde_yaml_ng::Value::deserialize(de) {
            Ok(serde_yaml_ng::Value::Null) => {}
            Ok(v) => docs.push(serde_json::to_value(v).map_err(|e| InjectError::Structure {
                document: i + 1,
                message: e.to_string(),
            })?),
            Err(e) => {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                return Err(InjectError::Yaml {
                    document: i + 1,
                    line,
                    column,
                    message: strip_location(&e.to_string()),
                });
            }
        }
    }
    Ok((Format::Yaml, docs))
}

/// Parser messages end with " at line L column C"; the error says it once, up front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Writes documents back in `format`.
pub fn render(format: Format, docs: &[Value]) -> Result<String, InjectError> {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        let err = |message: String| InjectError::Render {
            document: i + 1,
            message,
        };
        match format {
            Format::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_yaml_ng::to_string(doc).map_err(|e| err(e.to_string()))?);
            }
            Format::Json => {
                out.push_str(&serde_json::to_string_pretty(doc).map_err(|e| err(e.to_string()))?);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// `wsdrain inject` as a function: reads a stream, injects every opted-in pod template,
/// writes it back in the same syntax. Namespace labels are not visible here, so only pod
/// annotations and `cfg.all` opt pods in.
pub fn inject_documents(input: &str, cfg: &InjectConfig) -> Result<Output, InjectError> {
    let (format, mut docs) = parse(input)?;
    let cluster = Cluster::from_documents(&docs);
    let mut warnings = Vec::new();
    let mut injected = 0;
    let mut rbac: Vec<(String, String)> = Vec::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        let place = format!("document {}", i + 1);
        for_each_template(doc, &place, Some(&cluster), &mut |found| {
            let Some(template) = found.template else {
                warnings.push(format!(
                    "{}: no pod template at {}; left as is",
                    found.who, found.pointer
                ));
                return;
            };
            let template_asks = template
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(super::INJECT_ANNOTATION))
                .is_some();
            let wants_rbac = template_settings(template, cfg).pod_deletion_cost;
            let budgeted = found
                .concurrency
                .as_ref()
                .and_then(|c| with_concurrency(template, cfg, c));
            let report = inject_pod(template, budgeted.as_ref().map_or(cfg, |b| &b.0), false);
            if matches!(report.outcome, Outcome::Injected | Outcome::Upgraded) {
                injected += 1;
                if wants_rbac {
                    let sa = template
                        .get("spec")
                        .and_then(|s| s.get("serviceAccountName"))
                        .and_then(Value::as_str)
                        .unwrap_or("default")
                        .to_string();
                    let ns = found.namespace.clone().unwrap_or_else(|| {
                        warnings.push(format!(
                            "{}: no metadata.namespace: the RoleBinding for wsdrain.io/pod-deletion-cost names the ServiceAccount in namespace default",
                            found.who
                        ));
                        "default".into()
                    });
                    if !rbac.contains(&(ns.clone(), sa.clone())) {
                        warnings.push(format!(
                            "{}: wsdrain.io/pod-deletion-cost: added Role and RoleBinding wsdrain-pod-deletion-cost-{sa} in {ns}, letting ServiceAccount {sa} patch every pod of the namespace (RBAC cannot name pods not yet created)",
                            found.who
                        ));
                        rbac.push((ns, sa));
                    }
                }
                if let (Some(c), Some((b, rate))) = (&found.concurrency, &budgeted) {
                    let drain = template_settings(template, b).drain_bound();
                    let lines = fleet_report(c, *rate)
                        .chain(min_ready_warning(c, drain.as_secs_f64().ceil() as u64));
                    warnings.extend(lines.map(|w| format!("{}: {w}", found.who)));
                }
            }
            if !found.pointer.is_empty() && found.workload_asks && !template_asks {
                warnings.push(format!(
                    "{}: {} is set on the {} itself, which is ignored: put it in spec.template.metadata.annotations",
                    found.who,
                    super::INJECT_ANNOTATION,
                    found.kind
                ));
            }
            warnings.extend(
                report
                    .warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", found.who)),
            );
        });
    }
    for (ns, sa) in &rbac {
        docs.extend(super::container::deletion_cost_rbac(ns, sa));
    }
    Ok(Output {
        text: render(format, &docs)?,
        warnings,
        injected,
    })
}

/// The injection settings of a template: the defaults under its annotations.
fn template_settings(template: &Map<String, Value>, cfg: &InjectConfig) -> super::Settings {
    let empty = Map::new();
    let ann = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    cfg.defaults.with_overrides(ann, &mut Vec::new())
}

/// The config for a pod template under a fleet budget whose K is not set by hand: the
/// defaults with K worked out from the workload, and the pod's `--fleet-max-rate`.
/// `None` when there is no budget or the template sets K itself.
fn with_concurrency(
    template: &Map<String, Value>,
    cfg: &InjectConfig,
    c: &Concurrency,
) -> Option<(InjectConfig, f64)> {
    let empty = Map::new();
    let ann = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if ann.contains_key(CONCURRENT_DRAINS_ANNOTATION) {
        return None;
    }
    let settings = template_settings(template, cfg);
    if settings.drain.fleet_max_rate <= 0.0 {
        return None;
    }
    let mut cfg = cfg.clone();
    cfg.defaults.drain.max_concurrent_drains = c.k;
    Some((cfg, settings.drain.fleet_max_rate))
}

/// The rollout bound's condition, when it does not hold: `minReadySeconds` shorter than
/// the drain lets a fast rollout run ahead of the draining pods.
fn min_ready_warning(c: &Concurrency, drain_secs: u64) -> Option<String> {
    let min_ready = c.min_ready_seconds?;
    (min_ready < drain_secs && c.rollout < c.replicas).then(|| {
        format!(
            "spec.minReadySeconds is {min_ready} but a pod's drain takes up to {drain_secs} s: terminating pods do not count against maxSurge/maxUnavailable, so a rollout with a fast start-up moves on and more than {} pods drain at once; set spec.minReadySeconds: {drain_secs} (K assumes it)",
            c.rollout
        )
    })
}

/// What `inject` says about a budgeted workload: K and where it comes from, then the
/// notes.
fn fleet_report(c: &Concurrency, fleet_max_rate: f64) -> impl Iterator<Item = String> {
    let scale_down = c
        .scale_down
        .map_or_else(|| "no HPA".to_string(), |n| format!("HPA scale-down {n}"));
    let summary = format!(
        "fleet budget: {CONCURRENT_DRAINS_ANNOTATION} = {} (rollout {}, {scale_down}, evictions {}), so each pod drains at most {}/s",
        c.k,
        c.rollout,
        c.eviction,
        fleet_max_rate / f64::from(c.k)
    );
    std::iter::once(summary).chain(c.notes.iter().map(ToString::to_string))
}

/// `kind namespace/name` of an object, for messages.
fn identity(obj: &Map<String, Value>) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = obj.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    let name = field("name")
        .or(field("generateName"))
        .unwrap_or("(unnamed)");
    match field("namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Where the pod template of a workload kind lives, by API group and kind.
fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(""),
        ("", "ReplicationController" | "PodTemplate") => Some("/template"),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template")
        }
        ("batch", "Job") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// `wsdrain uninject` as a function: reads a stream, turns every injected pod template
/// back into what it was before injection, writes it back in the same syntax. A
/// template that cannot be uninjected is left as is with a warning naming the reason.
pub fn uninject_documents(input: &str) -> Result<Output, InjectError> {
    let (format, mut docs) = parse(input)?;
    docs.retain(|d| {
        d.pointer(&format!(
            "/metadata/labels/{}",
            super::container::GENERATED_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
            != Some("true")
    });
    let mut warnings = Vec::new();
    let mut changed = 0;
    for (i, doc) in docs.iter_mut().enumerate() {
        for_each_template(doc, &format!("document {}", i + 1), None, &mut |found| {
            let Some(template) = found.template else {
                return;
            };
            match super::undo::uninject_pod(template) {
                Ok(()) => changed += 1,
                Err(super::undo::UninjectError::NotInjected) => {}
                Err(e) => warnings.push(format!("{}: {e}", found.who)),
            }
        });
    }
    Ok(Output {
        text: render(format, &docs)?,
        warnings,
        injected: changed,
    })
}

/// A workload's pod template, as [`for_each_template`] finds it.
struct Found<'a> {
    /// The template; `None` when the workload has none where its kind keeps it.
    template: Option<&'a mut Map<String, Value>>,
    /// `document 1, item 2 (Deployment ns/web)`, for messages.
    who: &'a str,
    /// The workload's kind.
    kind: &'a str,
    /// Where the template sits in the workload (empty for a Pod).
    pointer: &'static str,
    /// The workload's own metadata carries the inject annotation.
    workload_asks: bool,
    /// How many of its pods may drain at once, for a Deployment or StatefulSet.
    concurrency: Option<Concurrency>,
    /// The workload's namespace, when its manifest names one.
    namespace: Option<String>,
}

/// The objects of `docs` with every `List` (`v1/List`, `DeploymentList`, …) opened into
/// its items, in input order: the injector's readers (`analyze`, the concurrency
/// worked out from HPAs and PDBs) must see a workload inside a List as one on its own.
pub fn objects(docs: &[Value]) -> Vec<&Map<String, Value>> {
    fn walk<'a>(doc: &'a Value, out: &mut Vec<&'a Map<String, Value>>) {
        let Some(obj) = doc.as_object() else { return };
        if obj
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
        {
            for item in obj
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(item, out);
            }
        } else {
            out.push(obj);
        }
    }
    let mut out = Vec::new();
    for doc in docs {
        walk(doc, &mut out);
    }
    out
}

/// Calls `f` with every workload in `doc` that has a pod template (Lists included);
/// with a `cluster`, each workload's concurrency is worked out against it.
fn for_each_template(
    doc: &mut Value,
    place: &str,
    cluster: Option<&Cluster>,
    f: &mut dyn FnMut(Found<'_>),
) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind.ends_with("List") {
        if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
            for (j, item) in items.iter_mut().enumerate() {
                for_each_template(item, &format!("{place}, item {}", j + 1), cluster, f);
            }
        }
        return;
    }
    let Some(pointer) = template_pointer(&api_version, &kind) else {
        return;
    };
    let who = format!("{place} ({})", identity(obj));
    let workload_asks = obj
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(super::INJECT_ANNOTATION))
        .is_some();
    let concurrency = cluster.and_then(|c| c.concurrency(obj));
    let namespace = obj
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let template = if pointer.is_empty() {
        Some(obj)
    } else {
        doc.pointer_mut(pointer).and_then(Value::as_object_mut)
    };
    f(Found {
        template,
        who: &who,
        kind: &kind,
        pointer,
        workload_asks,
        concurrency,
        namespace,
    });
}
