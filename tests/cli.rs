//! The command line: bad flags and values exit 2 with one line naming the flag.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsdrain"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run wsdrain");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_values_name_the_flag_on_one_line() {
    for (args, env, needle) in [
        (
            vec!["proxy", "--drain-window", "5x"],
            vec![],
            "--drain-window",
        ),
        (vec!["proxy", "--listen", "nowhere"], vec![], "--listen"),
        (
            vec!["proxy", "--close-code", "1005"],
            vec![],
            "1005 may not be sent",
        ),
        (
            vec!["proxy", "--max-header-size", "1KiB"],
            vec![],
            "between 8KiB and 1MiB",
        ),
        (
            vec!["proxy", "--max-connections", "0"],
            vec![],
            "--max-connections",
        ),
        (vec!["proxy", "--bogus"], vec![], "--bogus"),
        (
            vec!["proxy"],
            vec![("WSDRAIN_DRAIN_DELAY", "soon")],
            "--drain-delay",
        ),
        (
            vec!["proxy"],
            vec![("WSDRAIN_UPSTREAM", "x:y")],
            "--upstream",
        ),
        // Values the drain does arithmetic on are range-checked where they are parsed.
        (
            vec!["proxy", "--drain-max-rate", "1e-300"],
            vec![],
            "--drain-max-rate",
        ),
        (
            vec!["proxy"],
            vec![("WSDRAIN_DRAIN_WINDOW", "100000h")],
            "at most 24h",
        ),
        (
            vec!["proxy", "--reconnect-jitter", "2h"],
            vec![],
            "--reconnect-jitter",
        ),
        (
            vec!["proxy", "--tcp-keepalive", "10h"],
            vec![],
            "--tcp-keepalive",
        ),
        (
            vec!["proxy", "--rebalance-rate", "0"],
            vec![],
            "--rebalance-rate",
        ),
    ] {
        let (code, _, stderr) = run(&args, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("wsdrain: ") && stderr.contains(needle),
            "{stderr}"
        );
    }
}

#[test]
fn version_and_help_succeed() {
    let (code, stdout, _) = run(&["version"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with(&format!("wsdrain {} (commit ", env!("CARGO_PKG_VERSION"))));
    let (code, stdout, _) = run(&["proxy", "--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--drain-window") && stdout.contains("WSDRAIN_DRAIN_WINDOW"));
}

#[test]
fn a_busy_port_is_one_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let (code, _, stderr) = run(&["proxy", "--listen", &addr, "--admin", "127.0.0.1:0"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the listen address {addr}")),
        "{stderr}"
    );
}

#[test]
fn an_out_of_range_annotation_is_a_warning_and_the_default_stays() {
    use std::io::Write;
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: chat
  annotations:
    wsdrain.io/inject: "true"
    wsdrain.io/drain-max-rate: "1e-300"
    wsdrain.io/drain-window: "100000h"
spec:
  containers:
    - name: app
      image: chat:1
      ports:
        - name: http
          containerPort: 8080
"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsdrain"))
        .args(["inject", "--token", "a-token-of-sixteen-chars"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pod.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("inject");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("wsdrain.io/drain-max-rate"), "{stderr}");
    assert!(stderr.contains("wsdrain.io/drain-window"), "{stderr}");
    assert!(stdout.contains("- --drain-max-rate=0\n"), "{stdout}");
    assert!(stdout.contains("- --drain-window=30s\n"), "{stdout}");
}
