//! Tests of the injector: golden files over the fixtures in `tests/fixtures/inject/`,
//! idempotence for every fixture, targeted checks of what injection changes, and the
//! error and warning paths.
//!
//! Golden files are `<fixture>.injected.<ext>` (the output) and `<fixture>.warnings.txt`.
//! After an intended change, regenerate them with `WSDRAIN_UPDATE_GOLDEN=1 cargo test`
//! and review the diff.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::cli::{Cli, Command};

const TOKEN: &str = "golden-test-token-0123456789";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject")
}

/// The configuration `wsdrain inject --token TOKEN [extra...]` builds.
fn config(extra: &[&str]) -> InjectConfig {
    let mut args = vec!["wsdrain", "inject", "--token", TOKEN];
    args.extend_from_slice(extra);
    let Ok(Cli {
        command: Command::Inject(opts),
    }) = Cli::try_parse_from(args)
    else {
        panic!("inject options did not parse");
    };
    InjectConfig {
        defaults: Settings::from(&opts.defaults),
        all: opts.all,
        token: opts.token,
        upgrade: opts.upgrade,
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.ends_with(".yaml") || name.ends_with(".json")) && !name.contains(".injected.")
        })
        .collect();
    v.sort();
    assert!(v.len() >= 9, "fixtures missing: {v:?}");
    v
}

fn golden_paths(input: &Path) -> (PathBuf, PathBuf) {
    let stem = input.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
    let ext = input.extension().and_then(|s| s.to_str()).unwrap_or("yaml");
    let dir = fixtures_dir();
    (
        dir.join(format!("{stem}.injected.{ext}")),
        dir.join(format!("{stem}.warnings.txt")),
    )
}

fn run(path: &Path, cfg: &InjectConfig) -> Output {
    let input = std::fs::read_to_string(path).expect("fixture");
    inject_documents(&input, cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn golden_outputs_and_warnings() {
    let update = std::env::var_os("WSDRAIN_UPDATE_GOLDEN").is_some();
    let cfg = config(&[]);
    for input in fixtures() {
        let out = run(&input, &cfg);
        let (golden, golden_warnings) = golden_paths(&input);
        let warnings: String = out.warnings.iter().map(|w| format!("{w}\n")).collect();
        if update {
            std::fs::write(&golden, &out.text).expect("write golden");
            std::fs::write(&golden_warnings, &warnings).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} missing: WSDRAIN_UPDATE_GOLDEN=1", golden.display()));
        assert_eq!(out.text, expected, "output of {}", input.display());
        let expected = std::fs::read_to_string(&golden_warnings).expect("golden warnings");
        assert_eq!(warnings, expected, "warnings of {}", input.display());
    }
}

#[test]
fn injecting_twice_equals_injecting_once() {
    for extra in [&[][..], &["--all"], &["--classic"]] {
        let cfg = config(extra);
        for input in fixtures() {
            let once = run(&input, &cfg);
            let twice = inject_documents(&once.text, &cfg).expect("second pass");
            assert_eq!(twice.text, once.text, "{} {extra:?}", input.display());
            assert_eq!(twice.injected, 0, "{}", input.display());
            // A third pass through the parser also reads the second pass's output.
            let reparsed = documents::parse(&twice.text).expect("reparse").1;
            assert_eq!(reparsed, documents::parse(&once.text).expect("parse").1);
        }
    }
}

fn docs_of(name: &str, cfg: &InjectConfig) -> (Vec<Value>, Output) {
    let out = run(&fixtures_dir().join(name), cfg);
    let docs = documents::parse(&out.text).expect("parse output").1;
    (docs, out)
}

fn input_docs(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture");
    documents::parse(&text).expect("parse input").1
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn guide_deployment_gets_a_native_sidecar_taking_over_the_websocket_port() {
    let (docs, out) = docs_of("deployment-guide.yaml", &config(&[]));
    assert_eq!(out.injected, 1);
    let tpl = &docs[0]["spec"]["template"];
    let side = container(&tpl["spec"]["initContainers"], "wsdrain");
    assert_eq!(side["restartPolicy"], "Always");
    assert_eq!(
        side["ports"][0],
        json!({"name": "websocket", "containerPort": 15080, "protocol": "TCP"})
    );
    let a = args(side);
    assert_eq!(a[0], "proxy");
    for flag in [
        "--listen=0.0.0.0:15080",
        "--upstream=127.0.0.1:8080",
        "--admin=0.0.0.0:15090",
        "--drain-window=30s",
        "--close-code=1012",
        "--admin-token-file=/var/run/wsdrain/admin-token",
    ] {
        assert!(a.contains(&flag), "{flag} missing from {a:?}");
    }
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(side[probe]["httpGet"]["port"], 15090, "{probe}");
    }
    let app = container(&tpl["spec"]["containers"], "websocket-server");
    assert_eq!(app["ports"][0]["name"], "app-websocket");
    assert_eq!(app["ports"][1]["name"], "metrics");
    // Its own preStop is kept, and the user is told.
    assert_eq!(
        app["lifecycle"]["preStop"]["exec"]["command"][2],
        "sleep 15"
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("already has a preStop"))
    );
    // 5s + 30s + 5s + 10s margin.
    assert_eq!(tpl["spec"]["terminationGracePeriodSeconds"], 50);
    let ann = &tpl["metadata"]["annotations"];
    assert_eq!(ann[TOKEN_ANNOTATION], TOKEN);
    assert_eq!(ann[INJECTED_ANNOTATION], "true");
    assert_eq!(
        ann["prometheus.io/port"], "9090",
        "the app's scrape port is kept"
    );
    // Everything outside the pod template is as it was.
    let original = &input_docs("deployment-guide.yaml")[0];
    assert_eq!(docs[0]["metadata"], original["metadata"]);
    assert_eq!(docs[0]["spec"]["selector"], original["spec"]["selector"]);
    assert_eq!(
        tpl["spec"]["affinity"],
        original["spec"]["template"]["spec"]["affinity"]
    );
}

#[test]
fn annotation_overrides_apply_and_invalid_ones_fall_back() {
    let (docs, out) = docs_of("statefulset.yaml", &config(&[]));
    let spec = &docs[0]["spec"]["template"]["spec"];
    let side = container(&spec["initContainers"], "wsdrain");
    let a = args(side);
    assert!(a.contains(&"--drain-window=120s"));
    assert!(a.contains(&"--drain-delay=10s"));
    assert!(a.contains(&"--close-timeout=1500ms"));
    assert!(a.contains(&"--reconnect-jitter=20s"));
    assert!(
        a.contains(&"--close-code=1012"),
        "1005 is invalid: default kept"
    );
    assert!(a.contains(&"--upstream=127.0.0.1:3000"));
    assert_eq!(side["image"], "registry.example.com/wsdrain:0.1.0");
    assert_eq!(side["resources"]["limits"]["memory"], "512Mi");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("wsdrain.io/close-code") && w.contains("1005"))
    );
    // 10 + 120 + 1.5 -> 132, + 10 margin; raised from 60.
    assert_eq!(spec["terminationGracePeriodSeconds"], 142);
    // Probes named the taken-over port; they follow the rename.
    let app = container(&spec["containers"], "chat");
    assert_eq!(app["ports"][0]["name"], "app-http");
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], "app-http");
    assert_eq!(app["livenessProbe"]["tcpSocket"]["port"], "app-http");
    let pre = &app["lifecycle"]["preStop"]["httpGet"];
    assert_eq!(pre["path"], "/prestop");
    assert_eq!(pre["port"], 15090);
    assert_eq!(pre["httpHeaders"][0]["value"], format!("Bearer {TOKEN}"));
    assert_eq!(side["ports"][0]["name"], "http");
}

#[test]
fn existing_prestop_is_kept_and_its_named_port_follows_the_rename() {
    let (docs, out) = docs_of("pod-own-prestop.yaml", &config(&[]));
    let app = container(&docs[0]["spec"]["containers"], "game");
    assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["path"], "/shutdown");
    assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["port"], "app-ws");
    // The kept preStop, and the named-port note for native sidecars before 1.32.
    assert_eq!(out.warnings.len(), 2);
    assert!(out.warnings.iter().any(|w| w.contains("preStop")));
    assert!(out.warnings.iter().any(|w| w.contains("1.32")));
    let original = &input_docs("pod-own-prestop.yaml")[0];
    assert_eq!(
        container(&docs[0]["spec"]["containers"], "log-shipper"),
        container(&original["spec"]["containers"], "log-shipper")
    );
}

#[test]
fn opted_out_wins_even_with_all() {
    for extra in [&[][..], &["--all"]] {
        let (docs, out) = docs_of("opted-out.yaml", &config(extra));
        assert_eq!(docs, input_docs("opted-out.yaml"));
        assert_eq!(out.injected, 0);
    }
}

#[test]
fn already_injected_pod_is_left_alone() {
    let (docs, out) = docs_of("already-injected.yaml", &config(&["--all"]));
    assert_eq!(docs, input_docs("already-injected.yaml"));
    assert_eq!(out.injected, 0);
    assert!(out.warnings.is_empty());
}

#[test]
fn multi_document_changes_only_opted_in_templates() {
    let (docs, out) = docs_of("multi-document.yaml", &config(&[]));
    let input = input_docs("multi-document.yaml");
    assert_eq!(docs.len(), 4, "the empty document is dropped");
    assert_eq!(out.injected, 1);
    assert_eq!(docs[0], input[0], "Service");
    assert_eq!(docs[2], input[2], "DaemonSet not opted in");
    assert_eq!(docs[3], input[3], "ConfigMap");
    // Classic by annotation: a regular container, no restartPolicy, no initContainers.
    let spec = &docs[1]["spec"]["template"]["spec"];
    let side = container(&spec["containers"], "wsdrain");
    assert!(side.get("restartPolicy").is_none());
    assert!(spec.get("initContainers").is_none());
    // With --all, the DaemonSet is injected too.
    let (_, out) = docs_of("multi-document.yaml", &config(&["--all"]));
    assert_eq!(out.injected, 2);
}

#[test]
fn list_items_are_injected_with_the_annotated_port() {
    let (docs, out) = docs_of("list.yaml", &config(&[]));
    assert_eq!(out.injected, 1);
    let rs = &docs[0]["items"][0];
    let side = container(&rs["spec"]["template"]["spec"]["initContainers"], "wsdrain");
    assert_eq!(side["ports"][0]["name"], "stream");
    assert!(args(side).contains(&"--upstream=127.0.0.1:9001"));
    let app = container(&rs["spec"]["template"]["spec"]["containers"], "ticker");
    assert_eq!(
        app["ports"][1]["name"], "http",
        "only the annotated port is taken"
    );
    assert_eq!(docs[0]["items"][1], input_docs("list.yaml")[0]["items"][1]);
}

#[test]
fn cronjob_template_is_found_and_sidecar_follows_existing_init_containers() {
    let (docs, out) = docs_of("cronjob.yaml", &config(&[]));
    assert_eq!(out.injected, 1);
    let spec = &docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let init = spec["initContainers"].as_array().expect("init");
    assert_eq!(init[0]["name"], "migrate");
    assert_eq!(init[1]["name"], "wsdrain");
    assert_eq!(init[1]["ports"][0]["name"], "wsdrain");
    assert!(args(&init[1]).contains(&"--upstream=127.0.0.1:8443"));
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("no container port named"))
    );
}

#[test]
fn json_stays_json_and_a_longer_grace_period_is_kept() {
    let (docs, out) = docs_of("pod.json", &config(&[]));
    assert!(out.text.trim_start().starts_with('{'));
    let side = container(&docs[0]["spec"]["initContainers"], "wsdrain");
    assert!(args(side).contains(&"--listen=0.0.0.0:15081"));
    assert!(args(side).contains(&"--drain-max-rate=50"));
    assert_eq!(docs[0]["spec"]["terminationGracePeriodSeconds"], 600);
}

fn pod(annotations: Value, containers: Value) -> serde_json::Map<String, Value> {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": containers},
    })
    .as_object()
    .cloned()
    .expect("object")
}

#[test]
fn namespace_label_opts_in_and_random_tokens_differ() {
    let mut cfg = config(&[]);
    cfg.token = None;
    let base = pod(json!({}), json!([{"name": "a", "image": "a"}]));
    let mut p = base.clone();
    assert_eq!(inject_pod(&mut p, &cfg, false).outcome, Outcome::NotOptedIn);
    assert_eq!(p, base);
    let mut p1 = base.clone();
    let mut p2 = base.clone();
    assert_eq!(inject_pod(&mut p1, &cfg, true).outcome, Outcome::Injected);
    assert_eq!(inject_pod(&mut p2, &cfg, true).outcome, Outcome::Injected);
    let t1 = p1["metadata"]["annotations"][TOKEN_ANNOTATION]
        .as_str()
        .expect("token");
    let t2 = p2["metadata"]["annotations"][TOKEN_ANNOTATION]
        .as_str()
        .expect("token");
    assert_eq!(t1.len(), 64);
    assert_ne!(t1, t2);
    // A valid token already on the pod is kept.
    let mut p3 = pod(
        json!({TOKEN_ANNOTATION: "my-own-token-0123456789"}),
        json!([{"name": "a"}]),
    );
    inject_pod(&mut p3, &cfg, true);
    assert_eq!(
        p3["metadata"]["annotations"][TOKEN_ANNOTATION],
        "my-own-token-0123456789"
    );
}

#[test]
fn conflicts_refuse_and_leave_the_pod_unchanged() {
    let cfg = config(&["--all"]);
    let cases = [
        (
            json!({}),
            json!([{"name": "a", "ports": [{"containerPort": 15090}]}]),
            "15090",
        ),
        (json!({}), json!([{"name": "wsdrain"}]), "already there"),
        (json!({}), json!([]), "spec.containers"),
        (
            json!({"wsdrain.io/admin-port": "8080"}),
            json!([{"name": "a", "ports": [{"containerPort": 8080}]}]),
            "8080",
        ),
    ];
    for (ann, containers, needle) in cases {
        let original = pod(ann, containers);
        let mut p = original.clone();
        let report = inject_pod(&mut p, &cfg, false);
        assert_eq!(report.outcome, Outcome::Refused, "{needle}");
        assert_eq!(p, original);
        assert!(
            report.warnings.iter().any(|w| w.contains(needle)),
            "{needle}: {:?}",
            report.warnings
        );
    }
}

#[test]
fn bad_annotations_become_warnings() {
    let cfg = config(&["--all"]);
    let mut p = pod(
        json!({
            "wsdrain.io/drain-window": "soon",
            "wsdrain.io/cpu-request": "lots",
            "wsdrain.io/listen-port": "15090",
            "wsdrain.io/frobnicate": "1",
            "wsdrain.io/max-connections": 5,
        }),
        json!([{"name": "a", "ports": [{"name": "http", "containerPort": 80}]}]),
    );
    let report = inject_pod(&mut p, &cfg, false);
    assert_eq!(report.outcome, Outcome::Injected);
    let all = report.warnings.join("\n");
    for needle in [
        "drain-window",
        "cpu-request",
        "both 15090",
        "frobnicate",
        "not a string",
    ] {
        assert!(all.contains(needle), "{needle} not in {all}");
    }
    let side = container(&p["spec"]["initContainers"], "wsdrain");
    assert!(args(side).contains(&"--drain-window=30s"));
    assert!(args(side).contains(&"--listen=0.0.0.0:15080"));
}

#[test]
fn unknown_fields_survive() {
    let cfg = config(&["--all"]);
    let mut p = pod(
        json!({}),
        json!([{"name": "a", "x-future": {"kept": [1, 2]}}]),
    );
    p.insert("x-top".into(), json!("kept"));
    inject_pod(&mut p, &cfg, false);
    assert_eq!(p["x-top"], "kept");
    assert_eq!(
        p["spec"]["containers"][0]["x-future"],
        json!({"kept": [1, 2]})
    );
}

#[test]
fn long_port_names_get_a_valid_new_name() {
    let cfg = config(&["--all"]);
    let mut p = pod(
        json!({"wsdrain.io/port": "websocket-https"}),
        json!([{"name": "a", "ports": [{"name": "websocket-https", "containerPort": 443}, {"name": "wsdrain-app", "containerPort": 444}]}]),
    );
    inject_pod(&mut p, &cfg, false);
    let name = p["spec"]["containers"][0]["ports"][0]["name"]
        .as_str()
        .expect("name");
    assert!(
        name.len() <= 15 && name != "wsdrain-app" && name != "websocket-https",
        "{name}"
    );
}

#[test]
fn bad_yaml_names_the_document_and_line() {
    let input =
        "apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n";
    let err = inject_documents(input, &config(&[])).expect_err("bad YAML");
    let msg = err.to_string();
    assert!(
        msg.starts_with("document 2: invalid YAML at line "),
        "{msg}"
    );
    let InjectError::Yaml { line, .. } = err else {
        panic!("not a YAML error: {msg}");
    };
    assert!((6..=7).contains(&line), "{msg}");

    let err =
        inject_documents("{\"kind\": \"Pod\"}\n{\"kind\": ", &config(&[])).expect_err("bad JSON");
    assert!(
        err.to_string()
            .starts_with("document 2: invalid JSON at line 2"),
        "{err}"
    );

    let err = inject_documents("a: 1\na: 2\n", &config(&[])).expect_err("duplicate key");
    assert!(
        err.to_string()
            .starts_with("document 1: invalid YAML at line"),
        "{err}"
    );
}

#[test]
fn quantities_and_durations() {
    for ok in ["100m", "64Mi", "1", "1.5", "2e3", "0.5Gi", ""] {
        assert!(crate::values::parse_quantity(ok).is_ok(), "{ok}");
    }
    for bad in ["lots", "1.2.3", "Mi", "5 Mi", "1x"] {
        assert!(crate::values::parse_quantity(bad).is_err(), "{bad}");
    }
    use std::time::Duration;
    assert_eq!(settings::format_duration(Duration::from_secs(120)), "120s");
    assert_eq!(
        settings::format_duration(Duration::from_millis(1500)),
        "1500ms"
    );
}

#[test]
fn classic_sidecar_in_a_job_pod_is_reported() {
    let cfg = config(&["--all", "--classic"]);
    let mut p = pod(json!({}), json!([{"name": "a"}]));
    p["spec"]["restartPolicy"] = json!("Never");
    let report = inject_pod(&mut p, &cfg, false);
    assert_eq!(report.outcome, Outcome::Injected);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("never completes")),
        "{:?}",
        report.warnings
    );
}

/// What the injector did to the admin port: the sidecar's flag, its probes, the app's
/// preStop and the scrape annotation must all agree.
fn admin_port_everywhere(p: &serde_json::Map<String, Value>) -> Vec<String> {
    let v = Value::Object(p.clone());
    let side = container(&v["spec"]["initContainers"], "wsdrain");
    let flag = args(side)
        .into_iter()
        .find_map(|a| a.strip_prefix("--admin=0.0.0.0:"))
        .unwrap_or("none")
        .to_string();
    let app = &v["spec"]["containers"][0];
    vec![
        flag,
        side["readinessProbe"]["httpGet"]["port"].to_string(),
        app["lifecycle"]["preStop"]["httpGet"]["port"].to_string(),
        v["metadata"]["annotations"]["prometheus.io/port"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
    ]
}

#[test]
fn istio_pods_get_an_admin_port_istio_proxy_does_not_bind() {
    let cfg = config(&["--all"]);
    let app = json!({"name": "a", "ports": [{"name": "http", "containerPort": 80}]});
    let istio_proxy = json!({"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]});
    let with_label = {
        let mut p = pod(json!({}), json!([app.clone()]));
        p["metadata"]["labels"] = json!({"sidecar.istio.io/inject": "true"});
        p
    };
    let in_init = {
        let mut p = pod(json!({}), json!([app.clone()]));
        p["spec"]["initContainers"] = json!([istio_proxy.clone()]);
        p
    };
    let cases = [
        ("label", with_label),
        (
            "annotation",
            pod(
                json!({"sidecar.istio.io/inject": "True"}),
                json!([app.clone()]),
            ),
        ),
        (
            "status annotation",
            pod(
                json!({"sidecar.istio.io/status": "{}"}),
                json!([app.clone()]),
            ),
        ),
        (
            "istio-proxy container holding 15090",
            pod(json!({}), json!([app.clone(), istio_proxy.clone()])),
        ),
        ("istio-proxy native sidecar", in_init),
    ];
    for (what, mut p) in cases {
        let report = inject_pod(&mut p, &cfg, false);
        assert_eq!(report.outcome, Outcome::Injected, "{what}: {report:?}");
        assert_eq!(admin_port_everywhere(&p), ["15091"; 4], "{what}");
        assert_eq!(
            p["metadata"]["annotations"][istio::EXCLUDE_INBOUND],
            "15091",
            "{what}"
        );
        assert!(
            report.warnings.iter().any(|w| w.contains("15091")),
            "{what}: {:?}",
            report.warnings
        );
    }
    // No sign of Istio, or Istio declined: the documented default stays.
    for ann in [json!({}), json!({"sidecar.istio.io/inject": "false"})] {
        let mut p = pod(ann, json!([app.clone()]));
        assert_eq!(inject_pod(&mut p, &cfg, false).outcome, Outcome::Injected);
        assert_eq!(admin_port_everywhere(&p), ["15090"; 4]);
        assert!(
            p["metadata"]["annotations"]
                .get(istio::EXCLUDE_INBOUND)
                .is_none()
        );
    }
}

#[test]
fn the_admin_port_joins_an_existing_istio_capture_exclusion() {
    let cfg = config(&["--all"]);
    let app = json!([{"name": "a", "ports": [{"name": "http", "containerPort": 80}]}]);
    for (before, after) in [
        ("9000", "9000,15091"),
        ("9000, 15091", "9000, 15091"),
        ("", "15091"),
    ] {
        let mut p = pod(
            json!({"sidecar.istio.io/inject": "true", istio::EXCLUDE_INBOUND: before}),
            app.clone(),
        );
        assert_eq!(inject_pod(&mut p, &cfg, false).outcome, Outcome::Injected);
        assert_eq!(
            p["metadata"]["annotations"][istio::EXCLUDE_INBOUND],
            after,
            "{before:?}"
        );
    }
}

#[test]
fn istio_ports_chosen_by_annotation_refuse_the_injection() {
    let cfg = config(&["--all"]);
    let app = json!([{"name": "a", "ports": [{"name": "http", "containerPort": 80}]}]);
    let cases = [
        (json!({"wsdrain.io/admin-port": "15090"}), "15090"),
        (json!({"wsdrain.io/listen-port": "15006"}), "15006"),
        (json!({"wsdrain.io/listen-port": "15091"}), "15091"),
    ];
    for (mut ann, needle) in cases {
        ann["sidecar.istio.io/inject"] = json!("true");
        let original = pod(ann, app.clone());
        let mut p = original.clone();
        let report = inject_pod(&mut p, &cfg, false);
        assert_eq!(report.outcome, Outcome::Refused, "{needle}: {report:?}");
        assert_eq!(p, original);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains(needle) && w.contains("not injected")),
            "{needle}: {:?}",
            report.warnings
        );
    }
}

#[test]
fn uninject_of_inject_is_the_original_for_every_fixture() {
    for extra in [
        &[][..],
        &["--all"],
        &["--classic"],
        &["--kubernetes-version", "1.30"],
    ] {
        let cfg = config(extra);
        for input in fixtures() {
            let original = std::fs::read_to_string(&input).expect("fixture");
            let injected = inject_documents(&original, &cfg).expect("inject");
            let back = uninject_documents(&injected.text).expect("uninject");
            assert_eq!(
                back.injected,
                injected.injected,
                "{} {extra:?}",
                input.display()
            );
            assert_eq!(
                documents::parse(&back.text).expect("parse").1,
                documents::parse(&original).expect("parse").1,
                "{} {extra:?}",
                input.display()
            );
        }
    }
}

#[test]
fn uninject_refuses_a_pod_changed_since_injection_and_one_without_a_record() {
    let cfg = config(&[]);
    let mut p = pod(
        json!({"wsdrain.io/inject": "true"}),
        json!([{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]}]),
    );
    assert_eq!(inject_pod(&mut p, &cfg, false).outcome, Outcome::Injected);
    let mut changed = Value::Object(p.clone());
    changed["spec"]["containers"][0]["ports"][0]["name"] = json!("other");
    let mut changed = changed.as_object().cloned().expect("object");
    let before = changed.clone();
    let err = undo::uninject_pod(&mut changed).expect_err("changed pod");
    assert!(matches!(err, undo::UninjectError::Changed(_)), "{err}");
    assert_eq!(changed, before, "left unchanged on error");
    let mut old = input_docs("already-injected.yaml")[0]
        .as_object()
        .cloned()
        .expect("pod");
    assert_eq!(
        undo::uninject_pod(&mut old),
        Err(undo::UninjectError::NoRecord)
    );
}

#[test]
fn upgrade_replaces_an_older_sidecar_and_only_with_upgrade() {
    let fresh = |cfg: &InjectConfig| {
        let mut p = pod(
            json!({"wsdrain.io/inject": "true"}),
            json!([{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]}]),
        );
        assert_eq!(inject_pod(&mut p, cfg, false).outcome, Outcome::Injected);
        p
    };
    // What an older wsdrain (another image, an older version) left on the pod.
    let mut old = fresh(&config(&["--image", "wsdrain/wsdrain:0.0.9"]));
    old["metadata"]["annotations"]["wsdrain.io/version"] = json!("0.0.9");
    let cfg = config(&[]);
    let mut kept = old.clone();
    assert_eq!(
        inject_pod(&mut kept, &cfg, false).outcome,
        Outcome::AlreadyInjected
    );
    assert_eq!(kept, old, "no --upgrade: untouched");

    let mut up_cfg = config(&["--upgrade"]);
    up_cfg.token = cfg.token.clone();
    let mut upgraded = old.clone();
    let report = inject_pod(&mut upgraded, &up_cfg, false);
    assert_eq!(report.outcome, Outcome::Upgraded, "{report:?}");
    assert_eq!(
        upgraded,
        fresh(&cfg),
        "the same as a fresh injection by this version"
    );
    assert_eq!(
        inject_pod(&mut upgraded, &up_cfg, false).outcome,
        Outcome::AlreadyInjected
    );

    // Newer than us, or no version at all: left alone, with the reason.
    for (version, why) in [(Some("9.0.0"), "newer"), (None, "no record")] {
        let mut p = old.clone();
        let ann = p["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        match version {
            Some(v) => ann.insert("wsdrain.io/version".into(), json!(v)),
            None => ann.remove("wsdrain.io/version"),
        };
        let before = p.clone();
        let report = inject_pod(&mut p, &up_cfg, false);
        assert_eq!(report.outcome, Outcome::AlreadyInjected, "{why}");
        assert_eq!(p, before, "{why}");
        assert_eq!(report.warnings.len(), 1, "{why}: {report:?}");
    }
}

#[test]
fn labels_opt_in_and_out_and_injected_pods_carry_the_monitoring_label() {
    let (docs, out) = docs_of("opt-in-label.yaml", &config(&[]));
    assert_eq!(out.injected, 1);
    assert_eq!(docs[0]["metadata"]["labels"][INJECTED_LABEL], "true");
    assert_eq!(
        docs[0]["metadata"]["annotations"][VERSION_ANNOTATION],
        VERSION
    );
    assert_eq!(
        docs[1],
        input_docs("opt-in-label.yaml")[1],
        "label disabled wins"
    );
    assert_eq!(
        docs[2],
        input_docs("opt-in-label.yaml")[2],
        "hostNetwork refused"
    );
    assert!(out.warnings.iter().any(|w| w.contains("hostNetwork pod")));
}

#[test]
fn kubernetes_version_below_1_32_never_leaves_a_named_port_on_a_native_sidecar() {
    let input = || {
        pod(
            json!({"wsdrain.io/inject": "true"}),
            json!([{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]}]),
        )
    };
    let unnamed = || {
        pod(
            json!({"wsdrain.io/inject": "true"}),
            json!([{"name": "a", "image": "a", "ports": [{"containerPort": 8080}]}]),
        )
    };
    let place = |p: &serde_json::Map<String, Value>| {
        if has_container(p, "wsdrain")
            && p["spec"]["containers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == "wsdrain"))
        {
            "classic"
        } else {
            "native"
        }
    };
    for (version, named, want) in [
        ("1.31", true, "classic"),
        ("1.31", false, "native"),
        ("v1.29.3", true, "classic"),
        ("1.28", false, "classic"),
        ("1.32", true, "native"),
        ("1.35", true, "native"),
    ] {
        let cfg = config(&["--kubernetes-version", version]);
        let mut p = if named { input() } else { unnamed() };
        let report = inject_pod(&mut p, &cfg, false);
        assert_eq!(report.outcome, Outcome::Injected);
        assert_eq!(place(&p), want, "{version} named={named}: {report:?}");
        assert!(
            !report.warnings.iter().any(|w| w.contains("1.32+ only")),
            "a known version gets no maybe-warning: {report:?}"
        );
    }
    let bad = Cli::try_parse_from(["wsdrain", "inject", "--kubernetes-version", "2.1"]);
    assert!(bad.is_err());
}

#[test]
fn classic_mesh_proxies_outlive_the_drain() {
    let (docs, out) = docs_of("mesh-classic.yaml", &config(&[]));
    assert_eq!(out.injected, 2);
    let linkerd = &docs[0];
    assert_eq!(linkerd["metadata"]["annotations"][mesh::LINKERD_WAIT], "45");
    let proxy = container(&linkerd["spec"]["containers"], "linkerd-proxy");
    assert_eq!(
        proxy["lifecycle"]["preStop"]["exec"]["command"],
        json!(["/bin/sleep", "45"])
    );
    let istio = &docs[1];
    let cfg: Value = serde_json::from_str(
        istio["metadata"]["annotations"][mesh::ISTIO_CONFIG]
            .as_str()
            .expect("string"),
    )
    .expect("json");
    assert_eq!(cfg["terminationDrainDuration"], "45s");
    assert_eq!(
        cfg["holdApplicationUntilProxyStarts"], true,
        "kept the pod's own config"
    );
    // The wait covers the drain and fits in the grace period.
    let grace = istio["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(grace > 45, "{grace}");
}

#[test]
fn uninject_survives_api_server_defaulting_but_not_reordered_containers() {
    let cfg = config(&[]);
    let mut p = pod(
        json!({"wsdrain.io/inject": "true"}),
        json!([{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]},
               {"name": "b", "image": "b"}]),
    );
    let original = p.clone();
    assert_eq!(inject_pod(&mut p, &cfg, false).outcome, Outcome::Injected);
    // What defaulting adds before a webhook sees a pod created from the template.
    let mut defaulted = Value::Object(p.clone());
    defaulted["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]["scheme"] = json!("HTTP");
    defaulted["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
    defaulted["spec"]["dnsPolicy"] = json!("ClusterFirst");
    let mut defaulted = defaulted.as_object().cloned().expect("object");
    undo::uninject_pod(&mut defaulted).expect("defaulted fields do not block uninject");
    assert!(!has_container(&defaulted, "wsdrain"));
    assert_eq!(
        defaulted["spec"]["containers"][0]["ports"][0]["name"],
        "http"
    );
    assert!(
        defaulted["spec"]["containers"][0]
            .get("lifecycle")
            .is_none()
    );
    assert_eq!(defaulted["metadata"], original["metadata"]);
    // Containers reordered since injection: refused, not "restored" onto the wrong one.
    let mut swapped = Value::Object(p.clone());
    if let Some(cs) = swapped["spec"]["containers"].as_array_mut() {
        cs.swap(0, 1);
    }
    let mut swapped = swapped.as_object().cloned().expect("object");
    assert!(matches!(
        undo::uninject_pod(&mut swapped),
        Err(undo::UninjectError::Changed(_))
    ));
}

#[test]
fn a_fleet_budget_writes_k_and_the_grace_period_and_uninject_takes_them_back() {
    let input = std::fs::read_to_string(fixtures_dir().join("fleet-budget.yaml")).expect("fixture");
    let out = inject_documents(&input, &config(&[])).expect("inject");
    let docs = documents::parse(&out.text).expect("parse").1;
    let template = &docs[0]["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["wsdrain.io/max-concurrent-drains"],
        "2"
    );
    // 5 s + 30 s (1,000 connections at 100/2 per second fit the window) + 5 s, plus the
    // 10 s margin.
    assert_eq!(template["spec"]["terminationGracePeriodSeconds"], 50);
    let args = template["spec"]["initContainers"][0]["args"]
        .as_array()
        .expect("args");
    for want in [
        "--fleet-max-rate=100",
        "--max-concurrent-drains=2",
        "--termination-grace-period=50s",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    // Uninject restores the original, K annotation included.
    let back = uninject_documents(&out.text).expect("uninject");
    assert_eq!(
        documents::parse(&back.text).expect("parse").1,
        documents::parse(&input).expect("parse").1
    );
    // K set by hand wins, and no budget means no K at all.
    let by_hand = input.replace(
        "wsdrain.io/fleet-max-rate: \"100\"",
        "wsdrain.io/fleet-max-rate: \"100\"\n        wsdrain.io/max-concurrent-drains: \"7\"",
    );
    let out = inject_documents(&by_hand, &config(&[])).expect("inject");
    assert!(out.text.contains("--max-concurrent-drains=7"));
    assert!(!out.warnings.iter().any(|w| w.contains("fleet budget")));
    let unbudgeted = input.replace("        wsdrain.io/fleet-max-rate: \"100\"\n", "");
    let out = inject_documents(&unbudgeted, &config(&[])).expect("inject");
    assert!(!out.text.contains("max-concurrent-drains"));
    assert!(!out.text.contains("--termination-grace-period"));
    // The same budget from the command line.
    let out = inject_documents(&unbudgeted, &config(&["--fleet-max-rate", "100"])).expect("inject");
    assert!(
        out.text.contains("--max-concurrent-drains=2"),
        "{}",
        out.text
    );
}

#[test]
fn pod_deletion_cost_adds_the_flag_the_pod_name_and_rbac_that_uninject_removes() {
    let input = std::fs::read_to_string(fixtures_dir().join("deployment-guide.yaml"))
        .expect("fixture")
        .replace(
            "        wsdrain.io/inject: \"true\"\n",
            "        wsdrain.io/inject: \"true\"\n        wsdrain.io/pod-deletion-cost: \"true\"\n",
        );
    let out = inject_documents(&input, &config(&[])).expect("inject");
    let docs = documents::parse(&out.text).expect("parse").1;
    let pod = &docs[0]["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    assert!(
        sidecar["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--pod-deletion-cost")),
        "{sidecar}"
    );
    assert_eq!(
        sidecar["env"][1],
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(kinds.ends_with(&["Role", "RoleBinding"]), "{kinds:?}");
    let role = &docs[docs.len() - 2];
    assert_eq!(role["metadata"]["namespace"], "default");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}])
    );
    let binding = &docs[docs.len() - 1];
    assert_eq!(binding["subjects"][0]["name"], "default");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("patch every pod of the namespace"))
    );
    let back = uninject_documents(&out.text).expect("uninject");
    assert_eq!(
        documents::parse(&back.text).expect("parse").1,
        documents::parse(&input).expect("parse").1
    );
}

#[test]
fn the_webhooks_pods_take_the_fleet_budget_and_k_from_their_annotations() {
    // What the webhook sees: a pod created from a template that carries K.
    let mut p = pod(
        json!({
            "wsdrain.io/inject": "true",
            "wsdrain.io/fleet-max-rate": "100",
            "wsdrain.io/max-concurrent-drains": "4",
            "wsdrain.io/max-connections": "1000",
        }),
        json!([{"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]}]),
    );
    let report = inject_pod(&mut p, &config(&[]), false);
    assert_eq!(report.outcome, Outcome::Injected, "{:?}", report.warnings);
    let spec = &p["spec"];
    // 1,000 connections at 100/4 per second: 40 s, so 5 + 40 + 5 + the 10 s margin.
    assert_eq!(spec["terminationGracePeriodSeconds"], 60);
    let args = spec["initContainers"][0]["args"].as_array().expect("args");
    for want in [
        "--fleet-max-rate=100",
        "--max-concurrent-drains=4",
        "--termination-grace-period=60s",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    assert_eq!(
        p["metadata"]["annotations"]["wsdrain.io/max-concurrent-drains"],
        "4"
    );
}

#[test]
fn a_tls_secret_annotation_mounts_the_secret_and_sets_tls_dir() {
    let input = input_docs("deployment-guide.yaml");
    let mut pod = input[0]["spec"]["template"].clone();
    pod["metadata"]["annotations"]["wsdrain.io/tls-secret"] = json!("websocket-tls");
    let text = serde_json::to_string(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": pod["metadata"]["annotations"]},
        "spec": pod["spec"]}))
    .expect("json");
    let out = documents::inject_documents(&text, &config(&[])).expect("injects");
    let docs = documents::parse(&out.text).expect("parse").1;
    let spec = &docs[0]["spec"];
    let side = container(&spec["initContainers"], "wsdrain");
    assert!(args(side).contains(&"--tls-dir=/etc/wsdrain/tls"));
    let mount = side["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "wsdrain-tls")
        .expect("the TLS mount");
    assert_eq!(mount["mountPath"], "/etc/wsdrain/tls");
    assert_eq!(mount["readOnly"], true);
    assert!(
        mount.get("subPath").is_none(),
        "subPath would freeze the files"
    );
    let volume = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "wsdrain-tls")
        .expect("the TLS volume");
    assert_eq!(volume["secret"]["secretName"], "websocket-tls");
    // Undo takes it all back out.
    let undone = documents::uninject_documents(&out.text).expect("uninjects");
    let back = documents::parse(&undone.text).expect("parse").1;
    let volumes = back[0]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v["name"] != "wsdrain-tls"),
        "{volumes:?}"
    );
    // A name that cannot be a Secret's is refused with a warning; no TLS then.
    let bad = text.replace("websocket-tls", "Not_A_Name");
    let out = documents::inject_documents(&bad, &config(&[])).expect("injects");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("wsdrain.io/tls-secret"))
    );
    assert!(!out.text.contains("--tls-dir"));
}
