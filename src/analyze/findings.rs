//! The storms a manifest still hides, one check each, every finding with its fix.
//!
//! Each check reads one workload and the objects around it (its Services, the Ingresses
//! routing to them, the ingress controllers' ConfigMaps) and says what would make its
//! pods' drains add up to a storm, or cut connections the drain meant to close gently.
//!
//! Flow: the documents in ([`Objects::from_documents`]), then per workload its
//! [`Facts`]; [`Finding`]s out.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::inject::GRACE_MARGIN_SECS;
use crate::inject::concurrency::{Concurrency, Note, at, ident};
use crate::inject::container::SIDECAR_NAME;
use crate::inject::documents::objects;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Connections will be cut or a storm is certain: `analyze` exits 1.
    Error,
    /// A storm is likely under some disruption.
    Warning,
}

/// What a check can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// An HPA without a scale-down `Pods` policy.
    HpaNoScaleDownPodsPolicy,
    /// `terminationGracePeriodSeconds` shorter than the drain.
    GracePeriodShort,
    /// A `preStop` hook that sleeps instead of waiting for the drain.
    PrestopSleep,
    /// No app container has a readiness probe.
    NoReadinessProbe,
    /// A Service with `sessionAffinity: ClientIP`.
    SessionAffinity,
    /// An ingress timeout shorter than the drain.
    IngressTimeoutShort,
    /// No PodDisruptionBudget.
    NoPdb,
    /// `minReadySeconds` shorter than the drain: a rollout runs ahead of its drains.
    MinReadySecondsShort,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Which check.
    pub id: Check,
    /// How bad.
    pub severity: Severity,
    /// What is wrong, in the workload's terms.
    pub message: String,
    /// What to change.
    pub fix: String,
}

/// The objects of the input that checks look at besides the workload.
#[derive(Debug, Default)]
pub struct Objects {
    workloads: Vec<Map<String, Value>>,
    services: Vec<Map<String, Value>>,
    ingresses: Vec<Map<String, Value>>,
    config_maps: Vec<Map<String, Value>>,
}

impl Objects {
    /// Sorts the documents (Lists included) by what the checks need.
    pub fn from_documents(docs: &[Value]) -> Objects {
        let mut o = Objects::default();
        for obj in objects(docs) {
            match obj.get("kind").and_then(Value::as_str).unwrap_or("") {
                "Deployment" | "StatefulSet" | "Rollout" => o.workloads.push(obj.clone()),
                "Service" => o.services.push(obj.clone()),
                "Ingress" => o.ingresses.push(obj.clone()),
                "ConfigMap" => o.config_maps.push(obj.clone()),
                _ => {}
            }
        }
        o
    }

    /// The workloads, in input order.
    pub fn workloads(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.workloads.iter()
    }

    /// Services in the workload's namespace whose selector picks its pods.
    fn services_of<'a>(
        &'a self,
        ns: Option<&'a str>,
        labels: Option<&'a Map<String, Value>>,
    ) -> impl Iterator<Item = &'a Map<String, Value>> {
        self.services.iter().filter(move |s| {
            ident(s).1 == ns
                && at(s, "/spec/selector")
                    .and_then(Value::as_object)
                    .is_some_and(|sel| {
                        !sel.is_empty()
                            && sel
                                .iter()
                                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                    })
        })
    }
}

/// What the checks know about one workload.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The workload object.
    pub workload: &'a Map<String, Value>,
    /// Its pod template.
    pub template: &'a Map<String, Value>,
    /// K and its parts.
    pub concurrency: &'a Concurrency,
    /// Whether the template carries the sidecar.
    pub injected: bool,
    /// One pod's drain, seconds.
    pub drain_seconds: f64,
    /// The template's grace period, seconds.
    pub grace_seconds: u64,
}

/// Every check over one workload.
pub fn check(f: &Facts<'_>, objects: &Objects) -> Vec<Finding> {
    let mut out = Vec::new();
    for note in &f.concurrency.notes {
        match note {
            Note::NoScaleDownPodsPolicy { .. } => out.push(Finding {
                id: Check::HpaNoScaleDownPodsPolicy,
                severity: Severity::Warning,
                message: note.to_string(),
                fix: "add behavior.scaleDown.policies: [{type: Pods, value: 1, periodSeconds: 60}] (and keep selectPolicy: Min if there are others)".into(),
            }),
            Note::NoPdb { .. } => out.push(Finding {
                id: Check::NoPdb,
                severity: Severity::Warning,
                message: note.to_string(),
                fix: "add a PodDisruptionBudget with maxUnavailable: 1 selecting these pods".into(),
            }),
            _ => {}
        }
    }
    grace_period(f, &mut out);
    if rollout_runs_ahead(f) {
        let need = f.drain_seconds.ceil() as u64;
        out.push(Finding {
            id: Check::MinReadySecondsShort,
            severity: Severity::Warning,
            message: format!(
                "spec.minReadySeconds is {} but one pod's drain takes up to {need} s: terminating pods do not count against maxSurge/maxUnavailable, so a rollout with a fast start-up moves on and up to {} old pods drain at once instead of {}",
                f.concurrency.min_ready_seconds.unwrap_or(0),
                f.concurrency.replicas,
                f.concurrency.rollout
            ),
            fix: format!("set spec.minReadySeconds: {need}, so each step waits for the drains it started"),
        });
    }
    containers(f, &mut out);
    let ns = ident(f.workload).1;
    let labels = at(f.template, "/metadata/labels").and_then(Value::as_object);
    let services: Vec<_> = objects.services_of(ns, labels).collect();
    for svc in &services {
        if at(svc, "/spec/sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            out.push(Finding {
                id: Check::SessionAffinity,
                severity: Severity::Warning,
                message: format!(
                    "Service {} has sessionAffinity: ClientIP: clients behind one NAT all land on one pod, and that pod's drain sends them all back together",
                    ident(svc).2
                ),
                fix: "remove sessionAffinity (WebSocket connections stay on their pod anyway; reconnects should spread)".into(),
            });
        }
    }
    ingress_timeouts(f, objects, &services, &mut out);
    out
}

/// True when a rollout can move on while the old pods it stopped still drain, so more
/// than maxSurge + maxUnavailable drain at once.
pub fn rollout_runs_ahead(f: &Facts<'_>) -> bool {
    let c = f.concurrency;
    c.min_ready_seconds
        .is_some_and(|m| (m as f64) < f.drain_seconds && c.rollout < c.replicas)
}

fn grace_period(f: &Facts<'_>, out: &mut Vec<Finding>) {
    let need = f.drain_seconds.ceil() as u64;
    if f.injected && f.grace_seconds < need {
        out.push(Finding {
            id: Check::GracePeriodShort,
            severity: Severity::Error,
            message: format!(
                "terminationGracePeriodSeconds is {} but one pod's drain takes up to {need} s: the kubelet kills the pod mid-drain and cuts every connection still open",
                f.grace_seconds
            ),
            fix: format!(
                "set terminationGracePeriodSeconds: {} (what wsdrain inject writes), or shorten the drain",
                need + GRACE_MARGIN_SECS
            ),
        });
    }
}

fn containers(f: &Facts<'_>, out: &mut Vec<Finding>) {
    let apps: Vec<&Map<String, Value>> = at(f.template, "/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR_NAME))
        .collect();
    for c in &apps {
        let command = at(c, "/lifecycle/preStop/exec/command")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        if command
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .any(|w| w == "sleep")
        {
            out.push(Finding {
                id: Check::PrestopSleep,
                severity: Severity::Warning,
                message: format!(
                    "container {} has preStop `{command}`: a sleep waits a fixed time, then SIGTERM closes every connection at once",
                    c.get("name").and_then(Value::as_str).unwrap_or("?")
                ),
                fix: "wait for the drain instead: remove the hook and let wsdrain inject add its httpGet /prestop, or run `wsdrain drain --wait`".into(),
            });
        }
    }
    if !apps.is_empty() && !apps.iter().any(|c| c.contains_key("readinessProbe")) {
        out.push(Finding {
            id: Check::NoReadinessProbe,
            severity: Severity::Warning,
            message: "no app container has a readinessProbe: a new pod gets reconnecting clients before the app can take them, and they bounce back into the storm".into(),
            fix: "add a readinessProbe to the app container (an HTTP health endpoint)".into(),
        });
    }
}

/// An ingress timeout that ends connections: a value with where it was set.
struct Timeout {
    what: String,
    value: Duration,
}

/// Seconds as ingress-nginx writes them (`3600`), or a duration (`240s`, `1h`).
fn parse_timeout(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    raw.parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| humantime::parse_duration(raw).ok())
}

/// Ingress annotations whose timeout cuts a connection that is quiet for that long.
const INGRESS_TIMEOUT_ANNOTATIONS: &[&str] = &[
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
    "haproxy.org/timeout-tunnel",
];

/// Keys of ingress controllers' ConfigMaps that end WebSocket connections:
/// ingress-nginx's proxy timeouts and `worker-shutdown-timeout` (after a reload the old
/// workers keep WebSockets this long, then cut them all at once), HAProxy's tunnel
/// timeout.
const CONTROLLER_TIMEOUT_KEYS: &[&str] = &[
    "worker-shutdown-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "timeout-tunnel",
];

fn ingress_timeouts(
    f: &Facts<'_>,
    objects: &Objects,
    services: &[&Map<String, Value>],
    out: &mut Vec<Finding>,
) {
    let ns = ident(f.workload).1;
    let names: Vec<&str> = services.iter().map(|s| ident(s).2).collect();
    let mut timeouts = Vec::new();
    for ing in objects.ingresses.iter().filter(|i| ident(i).1 == ns) {
        if !routes_to(ing, &names) {
            continue;
        }
        let ann = at(ing, "/metadata/annotations").and_then(Value::as_object);
        for key in INGRESS_TIMEOUT_ANNOTATIONS {
            if let Some(value) = ann
                .and_then(|a| a.get(*key))
                .and_then(Value::as_str)
                .and_then(parse_timeout)
            {
                timeouts.push(Timeout {
                    what: format!("Ingress {} annotation {key}", ident(ing).2),
                    value,
                });
            }
        }
    }
    if !names.is_empty() || !objects.ingresses.is_empty() {
        for cm in &objects.config_maps {
            let data = at(cm, "/data").and_then(Value::as_object);
            for key in CONTROLLER_TIMEOUT_KEYS {
                if let Some(value) = data
                    .and_then(|d| d.get(*key))
                    .and_then(Value::as_str)
                    .and_then(parse_timeout)
                {
                    timeouts.push(Timeout {
                        what: format!("ConfigMap {} key {key}", ident(cm).2),
                        value,
                    });
                }
            }
        }
    }
    let drain = Duration::from_secs_f64(f.drain_seconds.max(0.0));
    for t in timeouts.into_iter().filter(|t| t.value < drain) {
        out.push(Finding {
            id: Check::IngressTimeoutShort,
            severity: Severity::Warning,
            message: format!(
                "{} is {} s, shorter than one pod's drain ({} s): the ingress ends connections the drain has not closed yet, all at once",
                t.what,
                t.value.as_secs(),
                drain.as_secs_f64().ceil()
            ),
            fix: format!(
                "raise it to at least {} s (WebSocket guides use 3600)",
                drain.as_secs_f64().ceil()
            ),
        });
    }
}

/// True when the Ingress sends traffic to one of `services`.
fn routes_to(ing: &Map<String, Value>, services: &[&str]) -> bool {
    let mut backends = Vec::new();
    if let Some(name) = at(ing, "/spec/defaultBackend/service/name").and_then(Value::as_str) {
        backends.push(name);
    }
    for rule in at(ing, "/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let paths = rule.pointer("/http/paths").and_then(Value::as_array);
        for path in paths.into_iter().flatten() {
            if let Some(name) = path
                .pointer("/backend/service/name")
                .and_then(Value::as_str)
            {
                backends.push(name);
            }
        }
    }
    backends.iter().any(|b| services.contains(b))
}
