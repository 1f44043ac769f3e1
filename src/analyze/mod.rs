//! `wsdrain analyze`: a reconnect-storm linter for manifests, offline.
//!
//! Each pod drains evenly once wsdrain is in, but drains add up across a fleet, and
//! the manifest decides by how much: the rollout's surge, the HPA's scale-down step, the
//! PDB, the grace period, a `preStop: sleep`, session affinity, an ingress that times
//! connections out before the drain closes them. This reads the same input as
//! `wsdrain inject` (a file, a directory of them, or stdin) and tells, per workload, how
//! many pods drain at once (K, as the injector works it out), how long one pod's drain
//! takes for `--connections-per-pod N`, and the worst fleet reconnect rate for a
//! rollout, an HPA scale-down and a node drain; then findings, each with its fix.
//!
//! Flow: manifests in; per workload a [`WorkloadReport`] (from `workload.rs`) with
//! [`findings::Finding`]s; text or JSON out (`report.rs`), exit status 1 on errors.

pub mod findings;
pub mod report;
#[cfg(test)]
mod tests;
pub mod workload;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{AnalyzeOptions, OutputFormat};
use crate::inject::concurrency::Cluster;
use crate::inject::documents::parse;
pub use workload::WorkloadReport;

/// Everything `analyze` found in its input.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Connections per pod the rates are computed for.
    pub connections_per_pod: u32,
    /// One report per Deployment, StatefulSet or Argo Rollout.
    pub workloads: Vec<WorkloadReport>,
    /// Findings of severity error, over all workloads.
    pub errors: usize,
    /// Findings of severity warning, over all workloads.
    pub warnings: usize,
}

/// Analyses a set of documents (all of the input: HPAs, PDBs, Services and Ingresses
/// are matched to workloads across files).
pub fn analyze(docs: &[Value], connections_per_pod: u32) -> Analysis {
    let cluster = Cluster::from_documents(docs);
    let objects = findings::Objects::from_documents(docs);
    let workloads: Vec<WorkloadReport> = objects
        .workloads()
        .filter_map(|w| workload::report(w, &cluster, &objects, connections_per_pod))
        .collect();
    let count = |s: findings::Severity| {
        workloads
            .iter()
            .flat_map(|w| &w.findings)
            .filter(|f| f.severity == s)
            .count()
    };
    Analysis {
        connections_per_pod,
        errors: count(findings::Severity::Error),
        warnings: count(findings::Severity::Warning),
        workloads,
    }
}

/// Runs `wsdrain analyze`: prints the analysis; an error finding makes it fail.
pub fn run(opts: &AnalyzeOptions) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for (name, text) in read_inputs(&opts.filename)? {
        let (_, mut d) = parse(&text).with_context(|| name.clone())?;
        docs.append(&mut d);
    }
    let analysis = analyze(&docs, opts.connections_per_pod);
    let out = match opts.output {
        OutputFormat::Text => report::text(&analysis),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&analysis)?;
            s.push('\n');
            s
        }
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing stdout")?;
    if analysis.errors > 0 {
        anyhow::bail!(
            "{} error(s) and {} warning(s) found",
            analysis.errors,
            analysis.warnings
        );
    }
    Ok(())
}

/// The texts to read: stdin for `-`, a file, or every `.yaml`, `.yml` and `.json` under a
/// directory (sorted, so the output is the same on every run).
fn read_inputs(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        return Ok(vec![("stdin".into(), s)]);
    }
    let mut files = Vec::new();
    if path.is_dir() {
        collect_manifests(path, &mut files, 0)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

/// How deep `analyze` looks into directories.
const MAX_DEPTH: usize = 8;

fn collect_manifests(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_manifests(&path, out, depth + 1)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}
