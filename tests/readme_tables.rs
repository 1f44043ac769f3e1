//! The README's metrics table is what operators build alerts from: every metric, error kind
//! and rejection reason wsdrain counts must be listed there, and nothing that is not.

use wsdrain::metrics::{ErrorKind, Rejection};

/// The backticked words of the README's metrics-table row for `metric`.
fn listed(metric: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with(&format!("| `{metric}` |")))
        .unwrap_or_else(|| panic!("README has no metrics row for {metric}"));
    let meaning = row.rsplit('|').nth(1).unwrap_or_default();
    meaning
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_error_kind_is_documented_and_only_those() {
    let mut documented = listed("websocket_errors_total");
    let mut counted: Vec<String> = ErrorKind::ALL.iter().map(|k| k.as_str().into()).collect();
    documented.sort();
    counted.sort();
    assert_eq!(documented, counted);
}

#[test]
fn every_rejection_reason_is_documented_and_only_those() {
    let mut documented = listed("wsdrain_upgrades_rejected_total");
    let mut counted: Vec<String> = Rejection::ALL.iter().map(|r| r.as_str().into()).collect();
    documented.sort();
    counted.sort();
    assert_eq!(documented, counted);
}

#[test]
fn every_exported_metric_has_a_row() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let text = wsdrain::metrics::Metrics::new().render();
    let missing: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.starts_with("process_"))
        .filter(|name| !readme.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a README row: {missing:?}"
    );
}
