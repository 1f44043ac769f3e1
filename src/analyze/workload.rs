//! One workload's numbers: its drain plan as the sidecar would run it, K, one pod's
//! drain time and the fleet's worst reconnect rate per kind of disruption.
//!
//! The plan is read the way the sidecar would get it: the table defaults, then the
//! arguments of an injected `wsdrain` container, then the pod's `wsdrain.io/<setting>`
//! annotations (what the injector would write). K is the annotation when set, else the
//! injector's derivation. Rates add across pods draining at once, so the fleet's rate
//! for a disruption is the number of pods it takes down together times one pod's rate.

use serde::Serialize;
use serde_json::{Map, Value};

use super::findings::{self, Finding, Objects};
use crate::drain::{DrainSettings, plan};
use crate::inject::concurrency::{Cluster, Concurrency, at, ident};
use crate::inject::container::SIDECAR_NAME;
use crate::inject::settings::PREFIX;

/// What `analyze` reports for one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// `Deployment`, `StatefulSet` or `Rollout`.
    pub kind: String,
    /// Namespace (`default` when the manifest sets none).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Whether the pod template already carries the wsdrain sidecar.
    pub injected: bool,
    /// Pods that may drain at once.
    pub k: u32,
    /// ... of which a rollout.
    pub rollout: u32,
    /// ... an HPA scale-down (`null` without an HPA).
    pub scale_down: Option<u32>,
    /// ... evictions (a node drain).
    pub eviction: u32,
    /// `--fleet-max-rate` of the pods, `null` without a budget.
    pub fleet_max_rate: Option<f64>,
    /// Connections per pod assumed.
    pub connections_per_pod: u32,
    /// How long one pod's closes are spread over, seconds.
    pub stagger_seconds: f64,
    /// One pod's drain from trigger to exit at most (announce + stagger + close
    /// timeout), seconds.
    pub drain_seconds: f64,
    /// The pod's `terminationGracePeriodSeconds` (30 when not set).
    pub grace_period_seconds: u64,
    /// Closes per second of one draining pod.
    pub per_pod_rate: f64,
    /// The fleet's worst reconnect rate per disruption, per second.
    pub fleet_rate: FleetRate,
    /// What to fix.
    pub findings: Vec<Finding>,
}

/// The fleet's worst reconnect rate for each kind of disruption.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRate {
    /// A rolling update: `rollout` pods at once, or every pod when `minReadySeconds` is
    /// shorter than the drain.
    pub rollout: f64,
    /// An HPA scale-down step; `null` without an HPA.
    pub scale_down: Option<f64>,
    /// A node drain: `eviction` pods at once.
    pub node_drain: f64,
}

/// The grace period Kubernetes applies when a pod sets none.
const DEFAULT_GRACE_SECS: u64 = 30;

/// The report of one workload; `None` for kinds that do not drain as a fleet.
pub fn report(
    workload: &Map<String, Value>,
    cluster: &Cluster,
    objects: &Objects,
    connections_per_pod: u32,
) -> Option<WorkloadReport> {
    let concurrency = cluster.concurrency(workload)?;
    let template = at(workload, "/spec/template").and_then(Value::as_object)?;
    let (plan, injected) = plan_of(template, &concurrency);
    let n = connections_per_pod as usize;
    let stagger = plan.stagger_length(n).as_secs_f64();
    let drain = plan.total_length(n).as_secs_f64();
    let per_pod_rate = if stagger > 0.0 {
        n as f64 / stagger
    } else {
        n as f64
    };
    let rate = |pods: u32| f64::from(pods) * per_pod_rate;
    let grace = at(template, "/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_GRACE_SECS);
    let (kind, ns, name) = ident(workload);
    let facts = findings::Facts {
        workload,
        template,
        concurrency: &concurrency,
        injected,
        drain_seconds: drain,
        grace_seconds: grace,
    };
    let findings = findings::check(&facts, objects);
    // A rollout that runs ahead of its drains has every old pod draining at worst.
    let rollout_pods = if findings::rollout_runs_ahead(&facts) {
        concurrency.replicas
    } else {
        concurrency.rollout
    };
    Some(WorkloadReport {
        kind: kind.to_string(),
        namespace: ns.unwrap_or("default").to_string(),
        name: name.to_string(),
        injected,
        k: if plan.fleet_max_rate > 0.0 {
            plan.max_concurrent_drains
        } else {
            concurrency.k
        },
        rollout: concurrency.rollout,
        scale_down: concurrency.scale_down,
        eviction: concurrency.eviction,
        fleet_max_rate: (plan.fleet_max_rate > 0.0).then_some(plan.fleet_max_rate),
        connections_per_pod,
        stagger_seconds: stagger,
        drain_seconds: drain,
        grace_period_seconds: grace,
        per_pod_rate,
        fleet_rate: FleetRate {
            rollout: rate(rollout_pods),
            scale_down: concurrency.scale_down.map(rate),
            node_drain: rate(concurrency.eviction),
        },
        findings,
    })
}

/// The drain plan the template's sidecar runs (or would run once injected), and whether
/// it is injected.
fn plan_of(template: &Map<String, Value>, c: &Concurrency) -> (DrainSettings, bool) {
    let mut plan = DrainSettings::default();
    let mut k_set = false;
    let mut injected = false;
    for list in ["initContainers", "containers"] {
        let containers = at(template, &format!("/spec/{list}")).and_then(Value::as_array);
        for sidecar in containers.into_iter().flatten() {
            if sidecar.get("name").and_then(Value::as_str) != Some(SIDECAR_NAME) {
                continue;
            }
            injected = true;
            let args = sidecar.get("args").and_then(Value::as_array);
            for arg in args.into_iter().flatten().filter_map(Value::as_str) {
                if let Some((name, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('='))
                    && plan::apply(&mut plan, name, value) == Some(Ok(()))
                {
                    k_set |= name == "max-concurrent-drains";
                }
            }
        }
    }
    let annotations = at(template, "/metadata/annotations").and_then(Value::as_object);
    for (key, value) in annotations.into_iter().flatten() {
        if let (Some(name), Some(raw)) = (key.strip_prefix(PREFIX), value.as_str())
            && plan::apply(&mut plan, name, raw.trim()) == Some(Ok(()))
        {
            k_set |= name == "max-concurrent-drains";
        }
    }
    // The pod's own bound is compared with the plan, not folded into it.
    plan.grace_period = std::time::Duration::ZERO;
    if !k_set {
        plan.max_concurrent_drains = if plan.fleet_max_rate > 0.0 { c.k } else { 1 };
    }
    (plan, injected)
}
