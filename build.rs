//! Build identity for `wsdrain --version` and the `wsdrain_build_info` metric: the git
//! commit the binary was built from and the Cargo profile.
//!
//! Kept cheap and hermetic: one `git rev-parse`, no dependencies, and a clean fallback.
//! `WSDRAIN_BUILD_COMMIT` wins when set (an image build, whose context has no `.git`);
//! outside a git checkout, or where git is not installed, the commit is `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WSDRAIN_BUILD_COMMIT");
    let commit = match std::env::var("WSDRAIN_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=WSDRAIN_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=WSDRAIN_PROFILE={profile}");
}

/// One git command's trimmed output; `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The short hash of HEAD, and a rerun whenever HEAD or the branch it points to moves.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when a commit lands: HEAD itself, the branch file and packed refs.
    for path in [
        Some("HEAD".to_string()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    .chain(["packed-refs".to_string()])
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path])
            && Path::new(&file).exists()
        {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    Some(commit)
}
