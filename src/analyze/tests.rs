//! `analyze` over fixtures in `tests/fixtures/analyze/`: `<check>.yaml` (and
//! `<check>.<variant>.yaml`) must trigger the check, `<check>.ok.yaml` must not.

use std::path::Path;

use serde_json::Value;

use super::findings::{Check, Severity};
use super::*;

fn analyze_file(path: &Path, n: u32) -> Analysis {
    let text = std::fs::read_to_string(path).expect("fixture");
    let (_, docs) = parse(&text).expect("fixture parses");
    analyze(&docs, n)
}

fn id_of(check: Check) -> String {
    serde_json::to_value(check)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn every_check_has_a_fixture_that_triggers_it_and_one_that_does_not() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyze");
    let mut seen = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    for path in paths {
        let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut parts = stem.trim_end_matches(".yaml").split('.');
        let id = parts.next().unwrap_or("").to_string();
        let ok = parts.next() == Some("ok");
        let a = analyze_file(&path, 1000);
        assert_eq!(a.workloads.len(), 1, "{stem}");
        let found: Vec<String> = a.workloads[0]
            .findings
            .iter()
            .map(|f| id_of(f.id))
            .collect();
        assert_eq!(found.contains(&id), !ok, "{stem}: {found:?}");
        let entry = seen.entry(id).or_default();
        if ok {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    let all = [
        Check::HpaNoScaleDownPodsPolicy,
        Check::GracePeriodShort,
        Check::PrestopSleep,
        Check::NoReadinessProbe,
        Check::SessionAffinity,
        Check::IngressTimeoutShort,
        Check::NoPdb,
        Check::MinReadySecondsShort,
    ];
    for check in all {
        let (triggers, passes) = seen.get(&id_of(check)).copied().unwrap_or_default();
        assert!(
            triggers >= 1 && passes >= 1,
            "{check:?}: {triggers} / {passes}"
        );
    }
    assert_eq!(seen.len(), all.len(), "{seen:?}");
}

#[test]
fn every_finding_says_what_to_fix_and_errors_are_counted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyze");
    let a = analyze_file(&dir.join("grace-period-short.yaml"), 1000);
    assert_eq!(a.errors, 1);
    let f = &a.workloads[0].findings[0];
    assert_eq!(
        (f.id, f.severity),
        (Check::GracePeriodShort, Severity::Error)
    );
    assert!(
        f.fix.contains("terminationGracePeriodSeconds: 50"),
        "{}",
        f.fix
    );
    for path in std::fs::read_dir(&dir).expect("fixtures") {
        let a = analyze_file(&path.expect("entry").path(), 1000);
        assert!(a.workloads[0].findings.iter().all(|f| !f.fix.is_empty()));
    }
}

#[test]
fn the_fleet_rate_is_k_times_one_pods_rate_and_a_budget_holds_it_to_r() {
    let manifest = |budget: &str| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: ws}}
spec:
  replicas: 10
  minReadySeconds: 200
  strategy: {{rollingUpdate: {{maxSurge: 2, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: ws}}}}
  template:
    metadata: {{labels: {{app: ws}}, annotations: {{{budget}}}}}
    spec: {{containers: [{{name: app, image: app, readinessProbe: {{tcpSocket: {{port: 8080}}}}}}]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: ws}}
spec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: ws}}}}}}
"
        )
    };
    let (_, docs) = parse(&manifest("")).expect("yaml");
    let w = &analyze(&docs, 3000).workloads[0];
    // No budget: 3,000 closes over the 30 s window, two pods at once in a rollout.
    assert_eq!((w.k, w.rollout, w.eviction), (2, 2, 1));
    assert!((w.per_pod_rate - 100.0).abs() < 1e-6, "{}", w.per_pod_rate);
    assert!((w.fleet_rate.rollout - 200.0).abs() < 1e-6);
    assert_eq!(w.drain_seconds, 40.0);
    // A budget of 50/s: each of the two pods closes at 25/s, 120 s for 3,000.
    let (_, docs) = parse(&manifest("wsdrain.io/fleet-max-rate: '50'")).expect("yaml");
    let w = &analyze(&docs, 3000).workloads[0];
    assert_eq!(w.fleet_max_rate, Some(50.0));
    assert!(
        (w.fleet_rate.rollout - 50.0).abs() < 1e-6,
        "{:?}",
        w.fleet_rate
    );
    assert_eq!(w.stagger_seconds, 120.0);
    let json: Value = serde_json::to_value(w).expect("json");
    assert_eq!(json["fleet_rate"]["rollout"], 50.0);
    assert_eq!(json["findings"].as_array().map(Vec::len), Some(0), "{json}");
}
