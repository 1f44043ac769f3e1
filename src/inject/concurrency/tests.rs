//! K over a table of real-shaped workloads: percent and absolute surge, HPA policies,
//! PDBs, StatefulSets and Argo Rollouts.

use serde_json::{Map, Value};

use super::*;
use crate::inject::documents::parse;

/// K and its parts for the first workload of `yaml`.
fn derive(yaml: &str) -> Concurrency {
    let (_, docs) = parse(yaml).expect("yaml");
    let cluster = Cluster::from_documents(&docs);
    let workload: &Map<String, Value> = docs
        .iter()
        .filter_map(Value::as_object)
        .find(|o| {
            matches!(
                o.get("kind").and_then(Value::as_str),
                Some("Deployment" | "StatefulSet" | "Rollout")
            )
        })
        .expect("a workload");
    cluster.concurrency(workload).expect("derivable")
}

fn deployment(replicas: u32, rolling: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: ws, namespace: chat}}
spec:
  replicas: {replicas}
  strategy: {rolling}
  selector: {{matchLabels: {{app: ws}}}}
  template:
    metadata: {{labels: {{app: ws}}}}
    spec: {{containers: [{{name: app, image: app}}]}}
"
    )
}

const PDB_ONE: &str = "---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: ws, namespace: chat}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: ws}}}
";

#[test]
fn rolling_updates_round_surge_up_and_unavailable_down() {
    // (replicas, strategy, rollout K)
    let table = [
        (10, "{}", 5), // 25 %: ceil 2.5 + floor 2.5
        (4, "{}", 2),  // 1 + 1
        (1, "{}", 1),  // ceil .25 = 1, floor = 0
        (10, "{rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}", 1),
        (10, "{rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}", 1), // forced to 1
        (
            10,
            "{rollingUpdate: {maxSurge: '50%', maxUnavailable: '10%'}}",
            6,
        ),
        (
            3,
            "{rollingUpdate: {maxSurge: '34%', maxUnavailable: '34%'}}",
            3,
        ), // 2 + 1
        (6, "{type: Recreate}", 6),
        (2, "{rollingUpdate: {maxSurge: 5, maxUnavailable: 5}}", 2), // at most replicas
    ];
    for (replicas, strategy, want) in table {
        let c = derive(&format!("{}{PDB_ONE}", deployment(replicas, strategy)));
        assert_eq!(c.rollout, want, "{replicas} replicas, {strategy}");
        assert_eq!(c.k, want.max(1), "{replicas} replicas, {strategy}");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }
}

#[test]
fn an_hpa_without_a_pods_policy_may_drop_to_min_replicas_at_once() {
    let hpa = |behavior: &str| {
        format!(
            "---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: ws, namespace: chat}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: ws}}
  minReplicas: 2
  maxReplicas: 20
  behavior: {behavior}
"
        )
    };
    let with = |behavior: &str| {
        derive(&format!(
            "{}{PDB_ONE}{}",
            deployment(4, "{rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"),
            hpa(behavior)
        ))
    };
    // No policies: Kubernetes' default 100 %, down to minReplicas.
    let c = with("{}");
    assert_eq!((c.scale_down, c.k, c.replicas), (Some(18), 18, 20));
    assert!(matches!(
        c.notes[0],
        Note::NoScaleDownPodsPolicy { may_remove: 18, .. }
    ));
    // A Pods policy bounds it.
    let c = with("{scaleDown: {policies: [{type: Pods, value: 2, periodSeconds: 60}]}}");
    assert_eq!((c.scale_down, c.k), (Some(2), 2));
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    // Percent of maxReplicas, Max of two policies; Min picks the smaller.
    let both = "[{type: Pods, value: 2, periodSeconds: 60}, {type: Percent, value: 25, periodSeconds: 60}]";
    let c = with(&format!("{{scaleDown: {{policies: {both}}}}}"));
    assert_eq!(c.scale_down, Some(5));
    let c = with(&format!(
        "{{scaleDown: {{selectPolicy: Min, policies: {both}}}}}"
    ));
    assert_eq!(c.scale_down, Some(2));
    // Percent only: bounded, but still flagged.
    let c = with("{scaleDown: {policies: [{type: Percent, value: 10, periodSeconds: 60}]}}");
    assert_eq!(c.scale_down, Some(2));
    assert_eq!(c.notes.len(), 1);
    let c = with("{scaleDown: {selectPolicy: Disabled}}");
    assert_eq!(c.scale_down, Some(0));
}

#[test]
fn pdbs_bound_evictions_with_percentages_rounded_up() {
    let pdb = |spec: &str| {
        format!(
            "---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: ws, namespace: chat}}
spec: {spec}
"
        )
    };
    let strategy = "{rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";
    let table = [
        (
            "{maxUnavailable: 2, selector: {matchLabels: {app: ws}}}",
            2,
            true,
        ),
        (
            "{maxUnavailable: '15%', selector: {matchLabels: {app: ws}}}",
            2,
            true,
        ), // ceil 1.5
        (
            "{minAvailable: '50%', selector: {matchLabels: {app: ws}}}",
            5,
            true,
        ),
        (
            "{minAvailable: 9, selector: {matchLabels: {app: ws}}}",
            1,
            true,
        ),
        // Another app's PDB does not count.
        (
            "{maxUnavailable: 1, selector: {matchLabels: {app: other}}}",
            10,
            false,
        ),
    ];
    for (spec, eviction, has_pdb) in table {
        let c = derive(&format!("{}{}", deployment(10, strategy), pdb(spec)));
        assert_eq!((c.eviction, c.has_pdb), (eviction, has_pdb), "{spec}");
        assert_eq!(c.k, eviction.max(1), "{spec}");
        assert_eq!(
            c.notes.iter().any(|n| matches!(n, Note::NoPdb { .. })),
            !has_pdb
        );
    }
}

#[test]
fn statefulsets_replace_max_unavailable_pods_above_the_partition() {
    let sts = |spec: &str| {
        format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: ws, namespace: chat}}
spec:
  replicas: 10
  {spec}
  selector: {{matchLabels: {{app: ws}}}}
  template:
    metadata: {{labels: {{app: ws}}}}
    spec: {{containers: [{{name: app, image: app}}]}}
{PDB_ONE}"
        )
    };
    let table = [
        ("updateStrategy: {type: RollingUpdate}", 1),
        ("updateStrategy: {rollingUpdate: {maxUnavailable: 3}}", 3),
        (
            "updateStrategy: {rollingUpdate: {maxUnavailable: '25%'}}",
            2,
        ),
        ("updateStrategy: {rollingUpdate: {maxUnavailable: '5%'}}", 1), // at least 1
        (
            "updateStrategy: {rollingUpdate: {maxUnavailable: 4, partition: 8}}",
            2,
        ),
        ("updateStrategy: {type: OnDelete}", 1),
    ];
    for (spec, want) in table {
        let c = derive(&sts(spec));
        assert_eq!(c.rollout, want, "{spec}");
    }
    // OrderedReady scale-down removes one pod at a time whatever the HPA allows.
    let hpa = "---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ws, namespace: chat}
spec: {scaleTargetRef: {kind: StatefulSet, name: ws}, minReplicas: 2, maxReplicas: 10}
";
    let c = derive(&format!("{}{hpa}", sts("updateStrategy: {}")));
    assert_eq!(c.scale_down, Some(1));
    let parallel = sts("podManagementPolicy: Parallel");
    let c = derive(&format!("{parallel}{hpa}"));
    assert_eq!(c.scale_down, Some(8));
}

#[test]
fn argo_rollouts_use_their_canary_limits_or_say_why_not() {
    let rollout = |strategy: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: ws, namespace: chat}}
spec:
  replicas: 8
  strategy: {strategy}
  selector: {{matchLabels: {{app: ws}}}}
  template:
    metadata: {{labels: {{app: ws}}}}
    spec: {{containers: [{{name: app, image: app}}]}}
{PDB_ONE}"
        )
    };
    let c = derive(&rollout(
        "{canary: {maxSurge: 1, maxUnavailable: 1, steps: [{setWeight: 20}, {pause: {}}]}}",
    ));
    assert_eq!(c.rollout, 2);
    let c = derive(&rollout("{blueGreen: {activeService: ws}}"));
    assert_eq!(c.rollout, 8);
    assert!(c.notes.contains(&Note::ArgoBlueGreen));
    // A Deployment managed by a Rollout through workloadRef: the Rollout's limits.
    let managed = format!(
        "{}{PDB_ONE}---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: ws-rollout, namespace: chat}}
spec:
  workloadRef: {{apiVersion: apps/v1, kind: Deployment, name: ws}}
  strategy: {{canary: {{maxSurge: 2, maxUnavailable: 0}}}}
",
        deployment(8, "{}")
    );
    let c = derive(&managed);
    assert_eq!(c.rollout, 2);
    assert!(matches!(&c.notes[0], Note::ArgoWorkloadRef { rollout } if rollout == "ws-rollout"));
}

#[test]
fn bad_values_fall_back_to_a_default_with_a_note() {
    let c = derive(&format!(
        "{}{PDB_ONE}",
        deployment(8, "{rollingUpdate: {maxSurge: lots, maxUnavailable: 1}}")
    ));
    assert_eq!(c.rollout, 3);
    assert!(matches!(&c.notes[0], Note::BadField { field, .. } if field == "maxSurge"));
    assert!(c.notes[0].to_string().contains("\"lots\""));
}
