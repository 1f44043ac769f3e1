//! `wsdrain analyze`'s text output: per workload K, one pod's drain, the fleet's worst
//! reconnect rates, then the findings with their fixes.
//!
//! Flow: an [`Analysis`] in; the text printed on stdout out.

use std::fmt::Write;

use super::Analysis;
use super::findings::Severity;

/// The analysis as text for people.
pub fn text(a: &Analysis) -> String {
    let mut out = String::new();
    for w in &a.workloads {
        let _ = writeln!(out, "{} {}/{}", w.kind, w.namespace, w.name);
        let scale_down = w
            .scale_down
            .map_or_else(|| "no HPA".to_string(), |n| format!("HPA scale-down {n}"));
        let _ = writeln!(
            out,
            "  K = {}: pods that may drain at once (rollout {}, {scale_down}, node drain {})",
            w.k, w.rollout, w.eviction
        );
        let budget = w
            .fleet_max_rate
            .map_or_else(String::new, |r| format!(", fleet budget {r}/s"));
        let _ = writeln!(
            out,
            "  one pod with {} connections: closes over {:.0} s at {:.1}/s, drain up to {:.0} s (grace period {} s){budget}{}",
            w.connections_per_pod,
            w.stagger_seconds,
            w.per_pod_rate,
            w.drain_seconds,
            w.grace_period_seconds,
            if w.injected {
                ""
            } else {
                " — as wsdrain inject would set it up"
            }
        );
        let scale = w
            .fleet_rate
            .scale_down
            .map_or_else(|| "-".to_string(), |r| format!("{r:.0}/s"));
        let _ = writeln!(
            out,
            "  worst fleet reconnect rate: rollout {:.0}/s, HPA scale-down {scale}, node drain {:.0}/s",
            w.fleet_rate.rollout, w.fleet_rate.node_drain
        );
        for f in &w.findings {
            let level = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let id = serde_json::to_value(f.id)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(out, "  {level} [{id}] {}", f.message);
            let _ = writeln!(out, "    fix: {}", f.fix);
        }
    }
    let _ = writeln!(
        out,
        "{} workload(s), {} error(s), {} warning(s)",
        a.workloads.len(),
        a.errors,
        a.warnings
    );
    out
}
