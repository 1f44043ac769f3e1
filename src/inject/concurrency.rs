//! How many pods of one workload can be draining at once (`--max-concurrent-drains`,
//! K), worked out from the manifests: the workload, and any HorizontalPodAutoscaler,
//! PodDisruptionBudget and Argo Rollout in the same input.
//!
//! The fleet budget needs no coordination because rates of independent drains add: if
//! at most K pods drain together, each draining at R/K keeps the fleet at R. K is what
//! Kubernetes lets terminate at once, and three controllers decide it:
//! - a rolling update: at most maxSurge + maxUnavailable old pods at once, each resolved
//!   against the replicas as the Deployment controller does (a percentage of maxSurge
//!   rounds up, of maxUnavailable down; both 0 means maxUnavailable 1); a StatefulSet
//!   replaces maxUnavailable pods (default 1, percentages round down, at least 1) of
//!   those at or above its `partition`; `Recreate` replaces every pod at once;
//! - an HPA scale-down: at most its policies allow per period (a `Pods` policy's
//!   value, a `Percent` policy's share of maxReplicas; `selectPolicy` picks the largest
//!   or smallest), and without policies Kubernetes' default of 100 % — straight down to
//!   `minReplicas`; an `OrderedReady` StatefulSet removes one pod at a time anyway;
//! - evictions (a node drain): at most what a matching PDB allows (its percentages
//!   round up, as the disruption controller does), else every pod.
//!
//! K is the largest of the three. Flow: the documents in ([`Cluster::from_documents`]);
//! per workload a [`Concurrency`] out, with [`Note`]s for what the user should fix or
//! know.

use std::fmt;

use serde_json::{Map, Value};

/// The objects besides workloads that decide K, as found in the input.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    hpas: Vec<Map<String, Value>>,
    pdbs: Vec<Map<String, Value>>,
    rollouts: Vec<Map<String, Value>>,
}

/// What K is made of, for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Pods that may be draining at once: the largest of the three below, at least 1.
    pub k: u32,
    /// Old pods a rollout terminates at once.
    pub rollout: u32,
    /// Pods an HPA scale-down removes at once; `None` without an HPA.
    pub scale_down: Option<u32>,
    /// Pods evictions may take at once (a PDB's allowance, else every pod).
    pub eviction: u32,
    /// Replicas K was resolved against (the HPA's maxReplicas when there is one).
    pub replicas: u32,
    /// Whether a PodDisruptionBudget covers the workload.
    pub has_pdb: bool,
    /// `spec.minReadySeconds` of a Deployment or Argo Rollout (0 when unset); `None` for
    /// a StatefulSet, whose rolling update waits for each pod's end anyway. The rollout
    /// bound holds only when it is at least the drain: terminating pods do not count
    /// against maxSurge/maxUnavailable, so with a fast start-up the controller moves on
    /// while old pods still drain.
    pub min_ready_seconds: Option<u64>,
    /// What the user should know or fix.
    pub notes: Vec<Note>,
}

/// Something about a workload's concurrency worth telling its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An HPA without a `Pods` scale-down policy.
    NoScaleDownPodsPolicy {
        /// The HPA's name.
        hpa: String,
        /// Pods it may remove at once.
        may_remove: u32,
    },
    /// No PodDisruptionBudget selects the workload's pods.
    NoPdb {
        /// Pods a node drain may evict at once.
        replicas: u32,
    },
    /// A StatefulSet with `updateStrategy: OnDelete`.
    OnDelete,
    /// An Argo Rollout manages the Deployment through `workloadRef`.
    ArgoWorkloadRef {
        /// The Rollout's name.
        rollout: String,
    },
    /// An Argo Rollout's blue-green strategy scales the old ReplicaSet down whole.
    ArgoBlueGreen,
    /// A field that could not be read; its default was used.
    BadField {
        /// Where.
        field: String,
        /// What it held.
        value: String,
    },
    /// A PDB whose selector uses an operator this reader does not evaluate.
    SelectorNotEvaluated {
        /// The PDB's name.
        pdb: String,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NoScaleDownPodsPolicy { hpa, may_remove } => write!(
                f,
                "HPA {hpa} has no scale-down Pods policy, so it may remove {may_remove} pods at once; add behavior.scaleDown.policies [{{type: Pods, value: 1, periodSeconds: 60}}] to bound it"
            ),
            Note::NoPdb { replicas } => write!(
                f,
                "no PodDisruptionBudget selects these pods, so a node drain may evict all {replicas} at once; add one with maxUnavailable: 1"
            ),
            Note::OnDelete => f.write_str(
                "updateStrategy OnDelete: pods are replaced as you delete them; K assumes one at a time",
            ),
            Note::ArgoWorkloadRef { rollout } => write!(
                f,
                "Argo Rollout {rollout} manages this Deployment (workloadRef): its canary steps decide how many pods terminate at once, which cannot be told from the Deployment; K uses the Rollout's maxSurge + maxUnavailable, check it or set wsdrain.io/max-concurrent-drains"
            ),
            Note::ArgoBlueGreen => f.write_str(
                "Argo blue-green: the old ReplicaSet is scaled down whole after the switch, so every pod drains at once",
            ),
            Note::BadField { field, value } => {
                write!(f, "{field}: \"{value}\" is not a count or a percentage; using the default")
            }
            Note::SelectorNotEvaluated { pdb } => write!(
                f,
                "PodDisruptionBudget {pdb}: its selector uses matchExpressions, which are not evaluated here; it is taken to select these pods"
            ),
        }
    }
}

fn str_at<'a>(v: &'a Map<String, Value>, pointer: &str) -> Option<&'a str> {
    at(v, pointer)?.as_str()
}

/// The value at a JSON pointer below an object.
pub fn at<'a>(v: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let mut parts = pointer.trim_start_matches('/').split('/');
    let mut cur = v.get(parts.next()?)?;
    for seg in parts {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn u32_at(v: &Map<String, Value>, pointer: &str) -> Option<u32> {
    at(v, pointer)?
        .as_u64()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// `kind`, `namespace` and `name` of an object; no namespace is `default`, as `kubectl
/// apply` without `-n` would have it.
pub fn ident(obj: &Map<String, Value>) -> (&str, Option<&str>, &str) {
    (
        obj.get("kind").and_then(Value::as_str).unwrap_or(""),
        Some(str_at(obj, "/metadata/namespace").unwrap_or("default")),
        str_at(obj, "/metadata/name").unwrap_or(""),
    )
}

impl Cluster {
    /// Collects the HPAs, PDBs and Argo Rollouts of `docs` (Lists included).
    pub fn from_documents(docs: &[Value]) -> Cluster {
        let mut c = Cluster::default();
        for obj in super::documents::objects(docs) {
            match obj.get("kind").and_then(Value::as_str).unwrap_or("") {
                "HorizontalPodAutoscaler" => c.hpas.push(obj.clone()),
                "PodDisruptionBudget" => c.pdbs.push(obj.clone()),
                "Rollout" => c.rollouts.push(obj.clone()),
                _ => {}
            }
        }
        c
    }

    /// The HPA scaling `workload`, if any.
    fn hpa_for(&self, workload: &Map<String, Value>) -> Option<&Map<String, Value>> {
        let (kind, ns, name) = ident(workload);
        self.hpas.iter().find(|h| {
            ident(h).1 == ns
                && str_at(h, "/spec/scaleTargetRef/kind") == Some(kind)
                && str_at(h, "/spec/scaleTargetRef/name") == Some(name)
        })
    }

    /// The Argo Rollout that manages `workload` through `workloadRef`.
    fn rollout_for(&self, workload: &Map<String, Value>) -> Option<&Map<String, Value>> {
        let (kind, ns, name) = ident(workload);
        self.rollouts.iter().find(|r| {
            ident(r).1 == ns
                && str_at(r, "/spec/workloadRef/kind") == Some(kind)
                && str_at(r, "/spec/workloadRef/name") == Some(name)
        })
    }

    /// Derives K for a Deployment, StatefulSet or Argo Rollout; `None` for other kinds
    /// (a DaemonSet, a Job, a bare Pod: nothing there drains as a fleet).
    pub fn concurrency(&self, workload: &Map<String, Value>) -> Option<Concurrency> {
        let (kind, _, _) = ident(workload);
        if !matches!(kind, "Deployment" | "StatefulSet" | "Rollout") {
            return None;
        }
        let mut notes = Vec::new();
        let hpa = self.hpa_for(workload);
        let spec_replicas = u32_at(workload, "/spec/replicas").unwrap_or(1);
        let replicas = hpa
            .and_then(|h| u32_at(h, "/spec/maxReplicas"))
            .unwrap_or(spec_replicas)
            .max(spec_replicas)
            .max(1);
        let rollout = match kind {
            "StatefulSet" => statefulset_rollout(workload, replicas, &mut notes),
            "Rollout" => argo_rollout(workload, replicas, &mut notes),
            _ => match self.rollout_for(workload) {
                Some(argo) => {
                    notes.push(Note::ArgoWorkloadRef {
                        rollout: ident(argo).2.to_string(),
                    });
                    argo_rollout(argo, replicas, &mut notes)
                }
                None => deployment_rollout(workload, replicas, &mut notes),
            },
        };
        let one_at_a_time = kind == "StatefulSet"
            && str_at(workload, "/spec/podManagementPolicy").unwrap_or("OrderedReady")
                == "OrderedReady";
        let scale_down = hpa.map(|h| {
            let n = hpa_scale_down(h, &mut notes);
            if one_at_a_time { n.min(1) } else { n }
        });
        let (eviction, has_pdb) = self.eviction(workload, replicas, &mut notes);
        let k = rollout.max(scale_down.unwrap_or(0)).max(eviction).max(1);
        let min_ready_seconds = (kind != "StatefulSet").then(|| {
            at(workload, "/spec/minReadySeconds")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        });
        Some(Concurrency {
            k,
            rollout,
            scale_down,
            eviction,
            replicas,
            has_pdb,
            min_ready_seconds,
            notes,
        })
    }

    /// Pods evictions may take at once, and whether a PDB bounds them.
    fn eviction(
        &self,
        workload: &Map<String, Value>,
        replicas: u32,
        notes: &mut Vec<Note>,
    ) -> (u32, bool) {
        let (_, ns, _) = ident(workload);
        let labels = at(workload, "/spec/template/metadata/labels").and_then(Value::as_object);
        let mut allowed: Option<u32> = None;
        for pdb in self.pdbs.iter().filter(|p| ident(p).1 == ns) {
            let Some(selector) = at(pdb, "/spec/selector").and_then(Value::as_object) else {
                continue;
            };
            if !selects(selector, labels) {
                continue;
            }
            if selector.contains_key("matchExpressions") {
                notes.push(Note::SelectorNotEvaluated {
                    pdb: ident(pdb).2.to_string(),
                });
            }
            let field = |f: &str| at(pdb, &format!("/spec/{f}"));
            let n = if let Some(v) = field("maxUnavailable") {
                scaled(v, replicas, true).unwrap_or_else(|| bad(notes, "maxUnavailable", v, 1))
            } else if let Some(v) = field("minAvailable") {
                let min = scaled(v, replicas, true)
                    .unwrap_or_else(|| bad(notes, "minAvailable", v, replicas));
                replicas.saturating_sub(min)
            } else {
                replicas
            };
            allowed = Some(allowed.map_or(n, |a| a.min(n)));
        }
        match allowed {
            Some(n) => (n, true),
            None => {
                notes.push(Note::NoPdb { replicas });
                (replicas, false)
            }
        }
    }
}

/// True when `selector`'s matchLabels are all among `labels` (matchExpressions are not
/// evaluated; a selector of only those is taken to match).
pub fn selects(selector: &Map<String, Value>, labels: Option<&Map<String, Value>>) -> bool {
    let want = selector.get("matchLabels").and_then(Value::as_object);
    want.into_iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        && (want.is_some_and(|w| !w.is_empty()) || selector.contains_key("matchExpressions"))
}

fn bad(notes: &mut Vec<Note>, field: &str, value: &Value, default: u32) -> u32 {
    notes.push(Note::BadField {
        field: field.to_string(),
        value: value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string),
    });
    default
}

/// An IntOrString (`3` or `"25%"`) resolved against `total`; a percentage rounds up or
/// down as asked. `None` when it is neither.
pub fn scaled(v: &Value, total: u32, round_up: bool) -> Option<u32> {
    if let Some(n) = v.as_u64() {
        return Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    let s = v.as_str()?.trim();
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    let pct: u64 = s.strip_suffix('%')?.trim().parse().ok()?;
    let product = pct * u64::from(total);
    let n = if round_up {
        product.div_ceil(100)
    } else {
        product / 100
    };
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

/// maxSurge + maxUnavailable of a rolling update (Deployment rounding), at most
/// `replicas`.
fn surge_plus_unavailable(
    obj: &Map<String, Value>,
    base: &str,
    replicas: u32,
    notes: &mut Vec<Note>,
) -> u32 {
    let quarter = Value::String("25%".into());
    let get = |f: &str| {
        at(obj, &format!("{base}/{f}"))
            .cloned()
            .unwrap_or(quarter.clone())
    };
    let (surge_v, unavailable_v) = (get("maxSurge"), get("maxUnavailable"));
    let surge = scaled(&surge_v, replicas, true)
        .unwrap_or_else(|| bad(notes, "maxSurge", &surge_v, replicas.div_ceil(4)));
    let mut unavailable = scaled(&unavailable_v, replicas, false)
        .unwrap_or_else(|| bad(notes, "maxUnavailable", &unavailable_v, replicas / 4));
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    surge.saturating_add(unavailable).min(replicas)
}

fn deployment_rollout(d: &Map<String, Value>, replicas: u32, notes: &mut Vec<Note>) -> u32 {
    if str_at(d, "/spec/strategy/type") == Some("Recreate") {
        return replicas;
    }
    surge_plus_unavailable(d, "/spec/strategy/rollingUpdate", replicas, notes)
}

fn statefulset_rollout(s: &Map<String, Value>, replicas: u32, notes: &mut Vec<Note>) -> u32 {
    if str_at(s, "/spec/updateStrategy/type") == Some("OnDelete") {
        notes.push(Note::OnDelete);
        return 1;
    }
    let partition = u32_at(s, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    let updated = replicas.saturating_sub(partition);
    let max_unavailable = match at(s, "/spec/updateStrategy/rollingUpdate/maxUnavailable") {
        Some(v) => scaled(v, replicas, false)
            .unwrap_or_else(|| bad(notes, "maxUnavailable", v, 1))
            .max(1),
        None => 1,
    };
    max_unavailable.min(updated)
}

fn argo_rollout(r: &Map<String, Value>, replicas: u32, notes: &mut Vec<Note>) -> u32 {
    if at(r, "/spec/strategy/blueGreen").is_some() {
        notes.push(Note::ArgoBlueGreen);
        return replicas;
    }
    surge_plus_unavailable(r, "/spec/strategy/canary", replicas, notes)
}

/// Pods one scale-down step of `hpa` may remove.
fn hpa_scale_down(hpa: &Map<String, Value>, notes: &mut Vec<Note>) -> u32 {
    let max = u32_at(hpa, "/spec/maxReplicas").unwrap_or(1);
    let min = u32_at(hpa, "/spec/minReplicas").unwrap_or(1);
    let span = max.saturating_sub(min);
    let select = str_at(hpa, "/spec/behavior/scaleDown/selectPolicy").unwrap_or("Max");
    if select == "Disabled" {
        return 0;
    }
    let policies = at(hpa, "/spec/behavior/scaleDown/policies")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty());
    let Some(policies) = policies else {
        // Kubernetes' default: 100 % per 15 s, straight down to minReplicas.
        notes.push(Note::NoScaleDownPodsPolicy {
            hpa: ident(hpa).2.to_string(),
            may_remove: span,
        });
        return span;
    };
    let allowed = policies.iter().filter_map(|p| {
        let value = u32::try_from(p.get("value")?.as_u64()?).unwrap_or(u32::MAX);
        match p.get("type")?.as_str()? {
            "Pods" => Some(value),
            "Percent" => {
                Some(u32::try_from(u64::from(max) * u64::from(value) / 100).unwrap_or(u32::MAX))
            }
            _ => None,
        }
    });
    let n = if select == "Min" {
        allowed.min()
    } else {
        allowed.max()
    }
    .unwrap_or(span)
    .min(span);
    let has_pods = policies
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some("Pods"));
    if !has_pods {
        notes.push(Note::NoScaleDownPodsPolicy {
            hpa: ident(hpa).2.to_string(),
            may_remove: n,
        });
    }
    n
}

#[cfg(test)]
mod tests;
