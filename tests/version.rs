//! Build identity: `wsdrain --version`, `wsdrain version` and the `wsdrain_build_info`
//! metric name the version, the git commit and the build profile, and `build.rs` falls
//! back to `unknown` outside a git checkout and where git is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{EchoApp, Proxy, http};

fn bin() -> String {
    std::env::var("WSDRAIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsdrain").into())
}

fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run wsdrain");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commit this checkout is at, when git can tell.
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_flag_and_verb_show_version_commit_and_profile() {
    let commit = env!("WSDRAIN_COMMIT");
    let expected = format!(
        "wsdrain {} (commit {commit}, {} build)",
        env!("CARGO_PKG_VERSION"),
        env!("WSDRAIN_PROFILE")
    );
    let flag = stdout_of(&["--version"]);
    assert_eq!(flag.trim(), expected);
    let verb = stdout_of(&["version"]);
    assert!(verb.starts_with(&expected), "{verb}");
    assert!(verb.contains(std::env::consts::ARCH), "{verb}");
    if let Some(head) = head_commit() {
        // Built from this checkout (the test binary and wsdrain share the build script).
        assert_eq!(commit, head, "the binary names the checkout's commit");
    }
    assert!(["debug", "release"].contains(&env!("WSDRAIN_PROFILE")));
}

#[tokio::test]
async fn build_info_metric_names_version_and_commit() {
    let app = EchoApp::start().await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let (_, body) = http(proxy.admin, "GET", "/metrics", &[], b"")
        .await
        .expect("metrics");
    let series = format!(
        "wsdrain_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        env!("WSDRAIN_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        body.lines().any(|l| l == series),
        "no `{series}` in:\n{body}"
    );
}

/// Compiles `build.rs` on its own (it has no dependencies) into `dir`.
fn compile_build_script(dir: &Path) -> PathBuf {
    let exe = dir.join("build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "-O", "-o"])
        .arg(&exe)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/build.rs"))
        .status()
        .expect("rustc");
    assert!(status.success());
    exe
}

/// Runs the build script in `cwd` with `path` as PATH; returns its `cargo:` lines.
fn run_build_script(exe: &Path, cwd: &Path, path: &str, commit_env: Option<&str>) -> String {
    let mut cmd = Command::new(exe);
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("PROFILE", "release");
    if let Some(c) = commit_env {
        cmd.env("WSDRAIN_BUILD_COMMIT", c);
    }
    let out = cmd.output().expect("run build script");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn build_script_falls_back_outside_git_and_without_git() {
    let dir = std::env::temp_dir().join(format!("wsdrain-build-rs-{}", std::process::id()));
    let outside = dir.join("not-a-checkout");
    std::fs::create_dir_all(&outside).expect("temp dir");
    let exe = compile_build_script(&dir);
    let path = std::env::var("PATH").unwrap_or_default();
    // Outside any git checkout (the temp dir is not inside one on a normal machine; if
    // it were, git would name that checkout's commit instead, so check for either).
    let lines = run_build_script(&exe, &outside, &path, None);
    assert!(
        lines.contains("cargo:rustc-env=WSDRAIN_PROFILE=release"),
        "{lines}"
    );
    let in_checkout = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(&outside)
        .output()
        .is_ok_and(|o| o.status.success());
    if !in_checkout {
        assert!(
            lines.contains("cargo:rustc-env=WSDRAIN_COMMIT=unknown"),
            "{lines}"
        );
    }
    // git not installed at all: an empty PATH, run from the checkout itself.
    let lines = run_build_script(&exe, Path::new(env!("CARGO_MANIFEST_DIR")), "", None);
    assert!(
        lines.contains("cargo:rustc-env=WSDRAIN_COMMIT=unknown"),
        "{lines}"
    );
    // An image build passes the commit in.
    let lines = run_build_script(&exe, &outside, "", Some("0123456789ab"));
    assert!(
        lines.contains("cargo:rustc-env=WSDRAIN_COMMIT=0123456789ab"),
        "{lines}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
