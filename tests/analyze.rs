//! `wsdrain analyze` as a user runs it: a file, a directory or stdin; text or JSON; exit
//! status 1 when a finding is an error.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> PathBuf {
    std::env::var_os("WSDRAIN_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_wsdrain")),
        PathBuf::from,
    )
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/analyze/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn analyze(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin())
        .arg("analyze")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wsdrain");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_error_finding_fails_the_run_and_json_carries_every_finding() {
    let (code, out, err) = analyze(
        &["-f", &fixture("grace-period-short.yaml"), "-o", "json"],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["errors"], 1);
    assert_eq!(v["workloads"][0]["findings"][0]["id"], "grace-period-short");
    assert!(err.contains("1 error(s)"), "{err}");

    let (code, out, err) = analyze(&["-f", &fixture("session-affinity.yaml")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("warning [session-affinity]"), "{out}");
    assert!(out.contains("fix: remove sessionAffinity"), "{out}");
}

#[test]
fn a_directory_and_stdin_are_read_like_a_file() {
    let (code, out, _) = analyze(&["-f", &fixture(""), "-o", "json"], None);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["workloads"].as_array().map(Vec::len), Some(17));

    let text = std::fs::read_to_string(fixture("no-pdb.yaml")).expect("fixture");
    let (code, out, _) = analyze(&["--connections-per-pod", "3000"], Some(&text));
    assert_eq!(code, Some(0));
    assert!(out.contains("one pod with 3000 connections"), "{out}");
    assert!(out.contains("warning [no-pdb]"), "{out}");

    let (code, _, err) = analyze(&["-f", "-"], Some("kind: [unclosed"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("stdin") && err.contains("invalid YAML"),
        "{err}"
    );
}
