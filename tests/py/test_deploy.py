"""deploy/ checked with real tools.

Offline: every manifest validates with kubernetes-validate (strict) for each Kubernetes
version >= 1.29 it ships; custom resources are checked for the fields they require;
every kustomization renders with `kubectl kustomize`; the drain arithmetic agrees across
files (grace period, preStop port, scale-down pace, ingress timeouts).

Live: `wsdrain proxy` runs in front of the echo app with connections the test holds; a
real Prometheus (Debian's `prometheus`) scrapes it on loopback with the labels a
ServiceMonitor would give it; the prometheus-adapter metricsQuery, the KEDA query and
every alert expression are evaluated through the HTTP API and compared with what the
test did. promtool checks the rules and wsdrain's /metrics, and every metric the
dashboard, the rules and the autoscalers name is one wsdrain exports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ECHO = Path(__file__).resolve().parent / "echo_server.py"

kubernetes_validate = pytest.importorskip("kubernetes_validate")


# ---------------------------------------------------------------------------- helpers


def k8s_versions() -> list[str]:
    """Every Kubernetes version >= 1.29 whose strict schemas kubernetes-validate ships."""
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = []
    for d in base.iterdir():
        m = re.fullmatch(r"v1\.(\d+)\.0-local-strict", d.name)
        if m and int(m.group(1)) >= 29:
            found.append((int(m.group(1)), f"1.{m.group(1)}.0"))
    return [v for _, v in sorted(found)]


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def patch_files() -> set[Path]:
    """Files used as kustomize patches: partial objects by design, checked once rendered."""
    out = set()
    for kdir in kustomization_dirs():
        k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        for p in k.get("patches", []) or []:
            if isinstance(p, dict) and "path" in p:
                out.add((kdir / p["path"]).resolve())
        for p in k.get("patchesStrategicMerge", []) or []:
            out.add((kdir / p).resolve())
    return out


# Files in deploy/ that are not Kubernetes objects: configuration to merge elsewhere.
FRAGMENTS = {DEPLOY / "autoscaling/prometheus-adapter/rules.yaml"}


def manifest_files() -> list[Path]:
    skip = patch_files() | {p.resolve() for p in FRAGMENTS}
    files = []
    for p in sorted(DEPLOY.rglob("*.y*ml")):
        if p.name == "kustomization.yaml" or p.resolve() in skip:
            continue
        files.append(p)
    return files


def render(kdir: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl (with kustomize) is not installed")
    r = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"kubectl kustomize {kdir} failed:\n{r.stderr}"
    return load_docs(r.stdout)


def is_builtin(api_version: str) -> bool:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


# Custom resources: kubernetes-validate has no schema for them, so each kind lists the
# paths it requires ("[]" walks every element of a list) and the enums it restricts.
CRD_RULES: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "required": ["spec.selector", "spec.endpoints[].port"]},
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "required": ["spec.selector", "spec.podMetricsEndpoints[].port"]},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "required": ["spec.groups[].name", "spec.groups[].rules[].expr"]},
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "required": ["spec.scaleTargetRef.name", "spec.triggers[].type",
                     "spec.triggers[].metadata"],
        "enums": {"spec.triggers[].metricType": {"AverageValue", "Value", "Utilization"}}},
    ("traefik.io/v1alpha1", "IngressRoute"): {
        "required": ["spec.routes[].match", "spec.routes[].kind",
                     "spec.routes[].services[].name", "spec.routes[].services[].port"],
        "enums": {"spec.routes[].kind": {"Rule"}}},
    ("traefik.io/v1alpha1", "ServersTransport"): {"required": ["spec"]},
    ("traefik.io/v1alpha1", "Middleware"): {"required": ["spec"]},
    ("networking.istio.io/v1", "Gateway"): {
        "required": ["spec.selector", "spec.servers[].port.number",
                     "spec.servers[].port.protocol", "spec.servers[].port.name",
                     "spec.servers[].hosts"]},
    ("networking.istio.io/v1", "VirtualService"): {
        "required": ["spec.hosts", "spec.http[].route[].destination.host"]},
    ("networking.istio.io/v1", "DestinationRule"): {
        "required": ["spec.host"],
        "enums": {"spec.trafficPolicy.connectionPool.http.h2UpgradePolicy":
                  {"DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"},
                  "spec.trafficPolicy.loadBalancer.simple":
                  {"UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST",
                   "LEAST_CONN"}}},
    ("policy.linkerd.io/v1beta3", "Server"): {
        "required": ["spec.port", "spec.proxyProtocol"],
        "one_of": [["spec.podSelector", "spec.externalWorkloadSelector"]],
        "enums": {"spec.proxyProtocol": {"unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque",
                                         "TLS"}}},
    ("policy.linkerd.io/v1alpha1", "AuthorizationPolicy"): {
        "required": ["spec.targetRef.kind", "spec.targetRef.name",
                     "spec.requiredAuthenticationRefs[].kind",
                     "spec.requiredAuthenticationRefs[].name"]},
    ("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication"): {
        "one_of": [["spec.identities", "spec.identityRefs"]]},
    ("cert-manager.io/v1", "Certificate"): {
        "required": ["spec.secretName", "spec.issuerRef.name"],
        "one_of": [["spec.dnsNames", "spec.commonName", "spec.uris", "spec.ipAddresses"]]},
    ("cert-manager.io/v1", "Issuer"): {
        "one_of": [["spec.selfSigned", "spec.ca", "spec.acme", "spec.vault", "spec.venafi"]]},
    ("cert-manager.io/v1", "ClusterIssuer"): {
        "one_of": [["spec.selfSigned", "spec.ca", "spec.acme", "spec.vault", "spec.venafi"]]},
}


def walk(obj, path: str) -> list:
    """Values at a dotted path; `x[]` fans out over list x. Missing -> no values."""
    values = [obj]
    for part in path.split("."):
        fan = part.endswith("[]")
        key = part[:-2] if fan else part
        nxt = []
        for v in values:
            if isinstance(v, dict) and key in v:
                child = v[key]
                if fan:
                    if isinstance(child, list):
                        nxt.extend(child)
                else:
                    nxt.append(child)
        values = nxt
    return values


def count_slots(obj, path: str) -> int:
    """How many values the path should have: one per element of every list fanned out."""
    if "[]" not in path:
        return 1
    head, _, rest = path.partition("[]")
    lists = walk(obj, head + "[]") if head else []
    if not rest:
        return len(lists)
    return sum(count_slots(el, rest.lstrip(".")) for el in lists)


def check_custom_resource(doc: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    rules = CRD_RULES.get(key)
    if rules is None:
        return [f"no field rules for custom resource {key}: add them to CRD_RULES"]
    errors = []
    name = doc.get("metadata", {}).get("name")
    if not name:
        errors.append(f"{key}: metadata.name is missing")
    for path in rules.get("required", []):
        values = [v for v in walk(doc, path) if v not in (None, "", [], {})]
        if not values or len(values) < count_slots(doc, path):
            errors.append(f"{key} {name}: {path} is required")
    for group in rules.get("one_of", []):
        if not any(walk(doc, p) for p in group):
            errors.append(f"{key} {name}: one of {group} is required")
    for path, allowed in rules.get("enums", {}).items():
        for v in walk(doc, path):
            if v not in allowed:
                errors.append(f"{key} {name}: {path} = {v!r} is not one of {sorted(allowed)}")
    return errors


def validate_docs(docs: list[dict], where: str) -> list[str]:
    errors = []
    for doc in docs:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        assert api and kind, f"{where}: a document without apiVersion/kind"
        if is_builtin(api):
            for version in k8s_versions():
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except Exception as e:  # ValidationError, SchemaNotFoundError
                    errors.append(f"{where}: {kind} {doc['metadata'].get('name')} "
                                  f"on Kubernetes {version}: {e}")
        else:
            errors.extend(f"{where}: {e}" for e in check_custom_resource(doc))
    return errors


def duration_s(v: str) -> float:
    total, rest = 0.0, v.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", rest):
        total += float(num) * units[unit]
    assert total > 0 or rest in ("0", "0s"), f"cannot read duration {v!r}"
    return total


def find(docs, kind, name=None):
    for d in docs:
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise AssertionError(f"no {kind} {name or ''} in the rendered output")


def sidecar_of(pod_spec: dict) -> dict:
    for c in pod_spec.get("initContainers", []):
        if c["name"] == "wsdrain":
            return c
    raise AssertionError("no wsdrain init container")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def drain_total_s(sidecar: dict) -> float:
    env = env_of(sidecar)
    return sum(duration_s(env.get(k, default)) for k, default in
               (("WSDRAIN_DRAIN_DELAY", "5s"), ("WSDRAIN_DRAIN_WINDOW", "30s"),
                ("WSDRAIN_CLOSE_TIMEOUT", "5s")))


def rule_groups() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "monitoring/prometheusrule.yaml").read_text())
    return doc["spec"]["groups"]


def alert(name: str) -> dict:
    for g in rule_groups():
        for r in g["rules"]:
            if r.get("alert") == name:
                return r
    raise AssertionError(f"no alert {name}")


# ------------------------------------------------------------------ offline validation


def test_kubernetes_validate_ships_versions_from_1_29():
    versions = k8s_versions()
    assert versions and versions[0] == "1.29.0", versions


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates(path):
    docs = load_docs(path.read_text())
    assert docs, f"{path} holds no document"
    errors = validate_docs(docs, str(path.relative_to(ROOT)))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kdir", kustomization_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_renders_and_validates(kdir):
    docs = render(kdir)
    assert docs, f"{kdir} renders nothing"
    errors = validate_docs(docs, f"kubectl kustomize {kdir.relative_to(ROOT)}")
    assert not errors, "\n".join(errors)


def test_crd_checker_rejects_what_it_should():
    bad_server = {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                  "metadata": {"name": "s"},
                  "spec": {"podSelector": {}, "port": 8080, "proxyProtocol": "HTTP/1.1"}}
    assert any("proxyProtocol" in e for e in check_custom_resource(bad_server))
    bad_route = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                 "metadata": {"name": "r"},
                 "spec": {"routes": [{"match": "Host(`a`)", "kind": "Rule",
                                      "services": [{"name": "x"}]}]}}
    assert any("port" in e for e in check_custom_resource(bad_route))
    unknown = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}}
    assert check_custom_resource(unknown)


def test_strict_validation_catches_a_typo():
    doc = yaml.safe_load((DEPLOY / "sidecar/pdb.yaml").read_text())
    doc["spec"]["maxUnavailabel"] = 1
    with pytest.raises(Exception):
        kubernetes_validate.validate(doc, k8s_versions()[0], strict=True)


# ------------------------------------------------------- drain arithmetic across files


SIDECAR_OVERLAYS = ["sidecar", "mesh/istio", "mesh/linkerd"]


@pytest.mark.parametrize("overlay", SIDECAR_OVERLAYS)
def test_pod_outlives_the_drain(overlay):
    docs = render(DEPLOY / overlay)
    dep = find(docs, "Deployment", "websocket-app")
    spec = dep["spec"]["template"]["spec"]
    side = sidecar_of(spec)
    assert side.get("restartPolicy") == "Always", "wsdrain must be a native sidecar"
    total = drain_total_s(side)
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= total + 10, f"grace {grace}s does not cover the drain {total}s + margin"

    env = env_of(side)
    admin_port = int(env["WSDRAIN_ADMIN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in side["ports"]}
    assert ports["wsdrain-admin"] == admin_port
    assert ports["http-ws"] == int(env["WSDRAIN_LISTEN"].rsplit(":", 1)[1])
    app = next(c for c in spec["containers"] if c["name"] == "app")
    hook = app["lifecycle"]["preStop"]["httpGet"]
    assert hook["path"] == "/prestop" and hook["port"] == admin_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert side[probe]["httpGet"]["port"] == "wsdrain-admin"
    assert side["readinessProbe"]["httpGet"]["path"] == "/readyz"

    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if overlay == "mesh/istio":
        assert admin_port != 15090, "15090 is istio-proxy's Envoy Prometheus port"
        assert ann["traffic.sidecar.istio.io/excludeInboundPorts"] == str(admin_port)
        cfg = yaml.safe_load(ann["proxy.istio.io/config"])
        assert total < duration_s(cfg["terminationDrainDuration"]) < grace
    if overlay == "mesh/linkerd":
        assert ann["config.linkerd.io/skip-inbound-ports"] == str(admin_port)
        wait = int(ann["config.alpha.linkerd.io/proxy-wait-before-exit-seconds"])
        assert total < wait < grace


def test_service_reaches_the_sidecar_with_affinity():
    docs = render(DEPLOY / "sidecar")
    svc = find(docs, "Service", "websocket-service")
    side = sidecar_of(find(docs, "Deployment", "websocket-app")["spec"]["template"]["spec"])
    # A number: a named targetPort reaches a native sidecar only from Kubernetes 1.32,
    # and deploy/sidecar works from 1.29.
    numbers = {p["containerPort"] for p in side["ports"] if p["name"] == "http-ws"}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in numbers, p
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def grace_and_drain():
    docs = render(DEPLOY / "sidecar")
    spec = find(docs, "Deployment", "websocket-app")["spec"]["template"]["spec"]
    return spec["terminationGracePeriodSeconds"], drain_total_s(sidecar_of(spec))


def test_scale_down_does_not_outrun_the_drain():
    grace, _ = grace_and_drain()
    hpa = yaml.safe_load((DEPLOY / "autoscaling/prometheus-adapter/hpa.yaml").read_text())
    so = yaml.safe_load((DEPLOY / "autoscaling/keda/scaledobject.yaml").read_text())
    for name, behavior in (("hpa", hpa["spec"]["behavior"]),
                           ("keda", so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
                            ["behavior"])):
        down = behavior["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= grace, name
        assert down.get("selectPolicy", "Max") == "Min", name
        pods = [p for p in down["policies"] if p["type"] == "Pods"]
        assert pods and all(p["value"] == 1 for p in pods), name
        # One pod removed per period, and a period outlasts a pod's whole termination.
        assert all(p["periodSeconds"] >= grace for p in down["policies"]), name
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "websocket_connections"


def test_ingress_timeouts_exceed_the_drain():
    _, total = grace_and_drain()
    nginx = yaml.safe_load((DEPLOY / "ingress/nginx/ingress.yaml").read_text())
    ann = nginx["metadata"]["annotations"]
    for k in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(ann[f"nginx.ingress.kubernetes.io/{k}"]) > total
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    haproxy = yaml.safe_load((DEPLOY / "ingress/haproxy/controller-configmap.yaml").read_text())
    assert duration_s(haproxy["data"]["timeout-tunnel"]) > total
    assert duration_s(haproxy["data"]["hard-stop-after"]) > total
    ha_ing = yaml.safe_load((DEPLOY / "ingress/haproxy/ingress.yaml").read_text())
    assert ha_ing["metadata"]["annotations"]["haproxy.org/load-balance"] == "leastconn"
    istio = load_docs((DEPLOY / "mesh/istio/gateway.yaml").read_text())
    dr = find(istio, "DestinationRule")
    assert duration_s(dr["spec"]["trafficPolicy"]["connectionPool"]["http"]["idleTimeout"]) > total
    # Every ingress backend is the client Service's named port, i.e. the sidecar.
    svc = find(render(DEPLOY / "sidecar"), "Service", "websocket-service")
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ing in (nginx, ha_ing):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["backend"]["service"]["name"] == "websocket-service"
                assert p["backend"]["service"]["port"]["name"] in port_names
    route = find(load_docs((DEPLOY / "ingress/traefik/ingressroute.yaml").read_text()),
                 "IngressRoute")
    for r in route["spec"]["routes"]:
        for s in r["services"]:
            assert s["name"] == "websocket-service" and s["port"] in port_names


def test_near_max_alert_uses_the_exported_limit():
    # The limit comes from the sidecar itself (wsdrain_max_connections), not a constant.
    expr = alert("WsdrainConnectionsNearMax")["expr"]
    assert "wsdrain_max_connections" in expr and "10000" not in expr


def test_networkpolicy_ports_are_sidecar_ports():
    docs = render(DEPLOY / "sidecar")
    side = sidecar_of(find(docs, "Deployment", "websocket-app")["spec"]["template"]["spec"])
    names = {p["name"] for p in side["ports"]}
    np_ = yaml.safe_load((DEPLOY / "monitoring/networkpolicy.yaml").read_text())
    used = {p["port"] for rule in np_["spec"]["ingress"] for p in rule["ports"]}
    assert used == names, "the policy admits exactly the sidecar's two ports, by name"


def test_promtool_check_rules(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": rule_groups()}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests(tmp_path):
    """Every alert fires where it should and not where it should not (promtool test
    rules, tests/promtool/alerts.test.yaml); annotations are checked separately."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    groups = rule_groups()
    tested = set(re.findall(r"alertname: (\w+)",
                            (ROOT / "tests/promtool/alerts.test.yaml").read_text()))
    assert tested == {r["alert"] for g in groups for r in g["rules"]}, "an alert without a test"
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(ROOT / "tests/promtool/alerts.test.yaml", tmp_path / "alerts.test.yaml")
    r = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_every_alert_has_a_runbook():
    runbooks = (ROOT / "docs/runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbooks, re.M)}
    for g in rule_groups():
        for r in g["rules"]:
            url = r["annotations"]["runbook_url"]
            assert url.split("#")[0].endswith("/docs/runbooks.md"), url
            assert url.split("#")[1] in anchors, f"{r['alert']}: no section #{url.split('#')[1]}"


def test_error_rate_alert_leaves_out_client_caused_kinds():
    expr = alert("WebSocketErrorRateHigh")["expr"]
    (excluded,) = re.findall(r'kind!~"([^"]+)"', expr)
    assert {"ping_timeout", "header_timeout", "bad_request", "close_timeout",
            "client_reset", "client_gone"} <= set(excluded.split("|"))


def test_dashboard_panels_read_the_sidecar_container_only():
    dash = json.loads((DEPLOY / "monitoring/grafana-dashboard.json").read_text())
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert 'container="wsdrain"' in t["expr"], f"panel {p['title']}: {t['expr']}"


def test_autoscalers_select_injected_pods_not_the_example_service():
    so = yaml.safe_load((DEPLOY / "autoscaling/keda/scaledobject.yaml").read_text())
    (trigger,) = so["spec"]["triggers"]
    q = trigger["metadata"]["query"]
    assert 'wsdrain_injected="true"' in q and f'workload="{so["spec"]["scaleTargetRef"]["name"]}"' in q
    assert "service=" not in q
    rule = adapter_rule()
    assert 'wsdrain_injected="true"' in rule["seriesQuery"]
    kust = yaml.safe_load((DEPLOY / "autoscaling/prometheus-adapter/kustomization.yaml").read_text())
    rendered = [yaml.safe_load((DEPLOY / "autoscaling/prometheus-adapter" / f).read_text())
                for f in kust["resources"]]
    assert all(d["kind"] != "ConfigMap" for d in rendered), "never overwrite the adapter's rules"
    pm = podmonitor()
    assert pm["spec"]["selector"]["matchLabels"] == {"wsdrain.io/injected": "true"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}


def test_networkpolicy_admits_the_k6_load_test():
    job = yaml.safe_load((DEPLOY / "loadtest/job.yaml").read_text())
    k6_labels = job["spec"]["template"]["metadata"]["labels"]
    np_ = yaml.safe_load((DEPLOY / "monitoring/networkpolicy.yaml").read_text())
    admitted = [
        (peer, {p["port"] for p in rule["ports"]})
        for rule in np_["spec"]["ingress"] for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert any(peer["podSelector"]["matchLabels"].items() <= k6_labels.items()
               and "http-ws" in ports for peer, ports in admitted), admitted


def test_sidecar_example_sets_an_admin_token():
    docs = render(DEPLOY / "sidecar")
    tmpl = find(docs, "Deployment", "websocket-app")["spec"]["template"]
    token = tmpl["metadata"]["annotations"]["wsdrain.io/admin-token"]
    assert 16 <= len(token) <= 256
    spec = tmpl["spec"]
    side = sidecar_of(spec)
    path = env_of(side)["WSDRAIN_ADMIN_TOKEN_FILE"]
    mount = next(m for m in side["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    (item,) = vol["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == "metadata.annotations['wsdrain.io/admin-token']"
    assert mount["mountPath"] + "/" + item["path"] == path
    app = next(c for c in spec["containers"] if c["name"] == "app")
    headers = app["lifecycle"]["preStop"]["httpGet"]["httpHeaders"]
    assert {"name": "Authorization", "value": f"Bearer {token}"} in headers
    assert tmpl["metadata"]["labels"]["wsdrain.io/injected"] == "true", "the PodMonitor sees it"


def test_dockerfile_matches_the_static_build_check():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    assert re.search(r"distroless/static|^scratch$", stages[-1]), stages[-1]
    assert re.search(r"^ARG TARGETARCH", text, re.M), "multi-arch through BuildKit's TARGETARCH"
    for arch, triple in [("amd64", "x86_64"), ("arm64", "aarch64")]:
        assert re.search(rf"{arch}\) echo {triple}-unknown-linux-musl", text), arch
    assert "--release --locked --target" in text
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', text))
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"] == "https://github.com/wsdrain/wsdrain"
    assert labels["org.opencontainers.image.revision"] == "${VCS_REF}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", text, re.M), "label matches Cargo.toml"
    assert "WSDRAIN_BUILD_COMMIT=${VCS_REF}" in text, "the image names its commit"
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root")), "non-root user"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/wsdrain"\]', text, re.M)
    script = (ROOT / "scripts/check-static-build").read_text()
    assert "unknown-linux-musl" in script and "--release --locked" in script


def test_static_build():
    """Builds the Dockerfile's target (musl, release) and checks the binary is static."""
    if os.environ.get("WSDRAIN_SKIP_STATIC_BUILD") == "1":
        pytest.skip("WSDRAIN_SKIP_STATIC_BUILD=1")
    if not shutil.which("rustup") or not shutil.which("cargo"):
        pytest.skip("rustup/cargo not found")
    r = subprocess.run([str(ROOT / "scripts/check-static-build")], capture_output=True,
                       text=True, timeout=3000, cwd=ROOT)
    out = r.stdout + r.stderr
    if r.returncode == 77:
        pytest.skip(next((l for l in out.splitlines() if l.startswith("SKIP")), out[-500:]))
    assert r.returncode == 0, out[-4000:]
    m = re.search(r"size: (\d+) bytes stripped", out)
    assert m, out[-2000:]
    print(out.splitlines()[-2])
    assert int(m.group(1)) < 20 * 1024 * 1024, "the static binary should stay small"


# --------------------------------------------------------------- metric names in use


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan", "le",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana query on PromQL)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    e = re.sub(r"\{\{.*?\}\}", "", e)          # Go templates in annotations
    e = re.sub(r"<<\.\w+>>", "", e)            # adapter placeholders
    e = re.sub(r"\$\{?\w+\}?", "1", e)         # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)            # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)           # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d+(ms|s|m|h|d)?", word):
            continue
        names.add(word)
    return names


def used_queries() -> dict[str, str]:
    """Every PromQL expression deploy/ ships, by where it is."""
    out = {}
    for g in rule_groups():
        for r in g["rules"]:
            out[f"rule {r.get('alert') or r.get('record')}"] = r["expr"]
    dash = json.loads((DEPLOY / "monitoring/grafana-dashboard.json").read_text())
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out[f"panel {p['title']} {t['refId']}"] = t["expr"]
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out[f"variable {v['name']}"] = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q)
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            out[f"annotation {a['name']}"] = a["expr"]
    so = yaml.safe_load((DEPLOY / "autoscaling/keda/scaledobject.yaml").read_text())
    for t in so["spec"]["triggers"]:
        out["keda query"] = t["metadata"]["query"]
    rule = adapter_rule()
    out["adapter seriesQuery"] = rule["seriesQuery"]
    out["adapter metricsQuery"] = rule["metricsQuery"]
    return out


def adapter_rule() -> dict:
    values = yaml.safe_load((DEPLOY / "autoscaling/prometheus-adapter/rules.yaml").read_text())
    rules = values["rules"]["custom"]
    (rule,) = [r for r in rules if r["name"]["as"] == "websocket_connections"]
    return rule


def test_metric_name_extraction():
    assert metric_names('sum by (pod) (rate(websocket_bytes_total{direction="a"}[5m]))') == \
        {"websocket_bytes_total"}
    assert metric_names("x > 0.9 * 10000 and on (pod) y == 1") == {"x", "y"}
    assert metric_names(
        'histogram_quantile(0.5, sum by (le) (rate(h_bucket{pod=~"$pod"}[$__rate_interval])))'
    ) == {"h_bucket"}
    assert len(used_queries()) > 20


# ------------------------------------------------------------------------ live stack


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def http_get(url: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


N_HELD = 5
NAMESPACE = "default"
WORKLOAD = "websocket-app"
POD_A, POD_B = "websocket-app-a", "websocket-app-b"


class Live:
    """Sidecars (A: app up, B: app down, C: TLS), held connections, a Prometheus."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.held = contextlib.ExitStack()

    def spawn(self, args, **kw):
        log = open(self.tmp / f"proc{len(self.procs)}.log", "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def close(self):
        try:
            self.held.close()
        except Exception:
            pass
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def metrics(self, admin_port: int) -> str:
        status, body = http_get(f"http://127.0.0.1:{admin_port}/metrics")
        assert status == 200
        return body

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})
        status, body = http_get(url)
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise AssertionError(f"{expr}: HTTP {status}, not JSON: {body[:300]!r}") from None
        assert status == 200 and data["status"] == "success", f"{expr}: {body}"
        return data["data"]["result"]

    def by_pod(self, expr: str) -> dict[str, float]:
        return {r["metric"].get("pod", ""): float(r["value"][1]) for r in self.query(expr)}

    def wait_value(self, expr: str, pred, timeout: float = 20):
        # An answer that is not a query result yet (seen once in a CI rehearsal: a body
        # that was not JSON right after /-/ready) is retried like a wrong value; the
        # last one is in the message, with Prometheus's log if it has exited.
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.by_pod(expr)
            except (AssertionError, OSError) as e:
                got = f"no result: {e}"
            else:
                if pred(got):
                    return got
            if time.monotonic() > deadline:
                prom = self.procs[-1]
                log = (self.tmp / f"proc{len(self.procs) - 1}.log").read_text()[-2000:]
                exited = f"; Prometheus exited {prom.returncode}: {log}" if prom.poll() is not None else ""
                raise AssertionError(f"{expr}: last answer {got}{exited}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def live():
    wsdrain = os.environ.get("WSDRAIN_BIN") or str(ROOT / "target/debug/wsdrain")
    if not Path(wsdrain).exists():
        pytest.skip(f"no wsdrain binary at {wsdrain} (set WSDRAIN_BIN)")
    prometheus = shutil.which("prometheus")
    if not prometheus:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    ws_sync = pytest.importorskip("websockets.sync.client")
    tmp = Path(tempfile.mkdtemp(prefix="wsdrain-deploy-"))
    lv = Live(tmp)
    try:
        app_port = free_port()
        lv.spawn([sys.executable, str(ECHO), "--port", str(app_port)])
        wait_http(f"http://127.0.0.1:{app_port}/health")
        dead_port = free_port()  # nothing listens: B's app is down
        lv.a_listen, lv.a_admin, lv.b_listen, lv.b_admin = (free_port() for _ in range(4))
        common = ["--drain-delay", "0s", "--drain-window", "1h", "--close-timeout", "5s"]
        lv.spawn([wsdrain, "proxy", "--listen", f"127.0.0.1:{lv.a_listen}",
                  "--upstream", f"127.0.0.1:{app_port}", "--admin", f"127.0.0.1:{lv.a_admin}",
                  "--max-connections", str(N_HELD), *common])
        lv.spawn([wsdrain, "proxy", "--listen", f"127.0.0.1:{lv.b_listen}",
                  "--upstream", f"127.0.0.1:{dead_port}", "--admin", f"127.0.0.1:{lv.b_admin}",
                  *common])
        # C terminates TLS, so the TLS metrics the rules use are exported too.
        lv.c_listen, lv.c_admin = free_port(), free_port()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                        "-subj", "/CN=localhost", "-keyout", str(tmp / "tls.key"),
                        "-out", str(tmp / "tls.crt")], check=True, capture_output=True)
        lv.spawn([wsdrain, "proxy", "--listen", f"127.0.0.1:{lv.c_listen}",
                  "--upstream", f"127.0.0.1:{app_port}", "--admin", f"127.0.0.1:{lv.c_admin}",
                  "--tls-dir", str(tmp), *common])
        wait_http(f"http://127.0.0.1:{lv.a_admin}/healthz")
        wait_http(f"http://127.0.0.1:{lv.b_admin}/healthz")
        wait_http(f"http://127.0.0.1:{lv.c_admin}/healthz")
        lv.connect = lambda port: ws_sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=5,
                                                  subprotocols=["chat.v1"],
                                                  close_timeout=2)

        # One connection that ends (a close and a duration sample), then N held ones,
        # each with one echoed message.
        with lv.connect(lv.a_listen) as ws:
            ws.send("bye")
            assert ws.recv(timeout=5) == "bye"
        for i in range(N_HELD):
            ws = lv.held.enter_context(lv.connect(lv.a_listen))
            ws.send(f"hello {i}")
            assert ws.recv(timeout=5) == f"hello {i}"
        assert http_get(f"http://127.0.0.1:{lv.a_listen}/health")[0] == 200

        # Prometheus starts after the connections are open, so a 1m average is exactly N.
        rules = tmp / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
        # The scrape job is the PodMonitor's, translated as the Prometheus Operator does
        # (keep pods with the selector's labels and the named port, then namespace /
        # pod / container, then the monitor's own relabelings); the targets carry the
        # __meta_kubernetes_* labels Kubernetes discovery would give these pods. A
        # third, not injected pod must be dropped by the selector.
        def meta(pod, injected=True):
            m = {"__meta_kubernetes_namespace": NAMESPACE,
                 "__meta_kubernetes_pod_name": pod,
                 "__meta_kubernetes_pod_container_name": "wsdrain",
                 "__meta_kubernetes_pod_container_port_name": "wsdrain-admin",
                 "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
                 "__meta_kubernetes_pod_controller_name": f"{WORKLOAD}-5d9c7b8f4",
                 "__meta_kubernetes_pod_node_name": "node-1"}
            if injected:
                m["__meta_kubernetes_pod_label_wsdrain_io_injected"] = "true"
                m["__meta_kubernetes_pod_labelpresent_wsdrain_io_injected"] = "true"
            return m
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": "wsdrain",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{lv.a_admin}"], "labels": meta(POD_A)},
                    {"targets": [f"127.0.0.1:{lv.b_admin}"], "labels": meta(POD_B)},
                    {"targets": [f"127.0.0.1:{lv.a_admin}"],
                     "labels": meta("not-injected-x", injected=False)},
                ],
                "relabel_configs": podmonitor_relabel_configs(),
            }],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        lv.prom_port = free_port()
        lv.spawn([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                  f"--storage.tsdb.path={tmp / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{lv.prom_port}",
                  "--storage.tsdb.retention.time=1h", "--log.level=warn"])
        wait_http(f"http://127.0.0.1:{lv.prom_port}/-/ready", timeout=30)
        lv.wait_value('up{job="wsdrain"}', lambda g: g.get(POD_A) == 1 and g.get(POD_B) == 1)

        # Failures, in two rounds: a labelled counter appears on its first increment, and
        # rate() needs it to grow after Prometheus first saw it.
        def fail_round(k):
            for _ in range(k):
                with pytest.raises(Exception):
                    lv.connect(lv.a_listen)  # A is full: 503
                with pytest.raises(Exception):
                    lv.connect(lv.b_listen)  # B's app is down: 502
                assert http_get(f"http://127.0.0.1:{lv.b_listen}/health")[0] == 502

        fail_round(1)
        lv.wait_value('sum by (pod) (wsdrain_upgrades_rejected_total)', lambda g: len(g) >= 2)
        time.sleep(1.5)
        fail_round(3)
        lv.wait_value('sum by (pod) (wsdrain_upgrades_rejected_total)', lambda g: g.get(POD_A) == 4
                      and g.get(POD_B) == 4)
        time.sleep(1.5)
        yield lv
    finally:
        lv.close()
        shutil.rmtree(tmp, ignore_errors=True)


def podmonitor() -> dict:
    return yaml.safe_load((DEPLOY / "monitoring/podmonitor.yaml").read_text())


def podmonitor_relabel_configs() -> list[dict]:
    """The PodMonitor as Prometheus relabel_configs, the way the Prometheus Operator
    writes them: selector and port as `keep`, the standard target labels, then the
    monitor's relabelings (camelCase fields to Prometheus' snake_case)."""
    pm = podmonitor()
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    sanitize = lambda k: re.sub(r"[^a-zA-Z0-9_]", "_", k)  # noqa: E731
    out = []
    for k, v in pm["spec"]["selector"]["matchLabels"].items():
        out.append({"action": "keep", "regex": v,
                    "source_labels": [f"__meta_kubernetes_pod_label_{sanitize(k)}"]})
    out.append({"action": "keep", "regex": ep["port"],
                "source_labels": ["__meta_kubernetes_pod_container_port_name"]})
    for target, source in (("namespace", "__meta_kubernetes_namespace"),
                           ("container", "__meta_kubernetes_pod_container_name"),
                           ("pod", "__meta_kubernetes_pod_name")):
        out.append({"source_labels": [source], "target_label": target})
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    for r in ep.get("relabelings", []):
        out.append({snake.get(k, k): v for k, v in r.items()})
    return out


def test_podmonitor_selects_injected_pods_only(live):
    assert live.by_pod("up") == {POD_A: 1, POD_B: 1}
    labels = live.query(f'websocket_connections_active{{pod="{POD_A}"}}')[0]["metric"]
    assert labels["wsdrain_injected"] == "true"
    assert labels["workload"] == WORKLOAD
    assert labels["container"] == "wsdrain"
    assert labels["namespace"] == NAMESPACE


def test_adapter_metrics_query_counts_held_connections(live):
    rule = adapter_rule()
    series = live.query(rule["seriesQuery"])
    assert {s["metric"]["pod"] for s in series} == {POD_A, POD_B}
    matchers = f'namespace="{NAMESPACE}",pod=~"{POD_A}|{POD_B}"'
    expr = (rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))
    assert live.by_pod(expr) == {POD_A: N_HELD, POD_B: 0}


def test_keda_query_counts_held_connections(live):
    so = yaml.safe_load((DEPLOY / "autoscaling/keda/scaledobject.yaml").read_text())
    (trigger,) = so["spec"]["triggers"]
    result = live.query(trigger["metadata"]["query"])
    assert len(result) == 1 and float(result[0]["value"][1]) == N_HELD


def test_alerts_fire_where_they_should(live):
    # Thresholds as shipped; the test sidecars run with --max-connections N_HELD.
    near = alert("WsdrainConnectionsNearMax")["expr"]
    assert live.by_pod(near) == {POD_A: N_HELD}
    assert set(live.by_pod(alert("WsdrainConnectionsAtMax")["expr"])) == {POD_A}
    assert set(live.by_pod(alert("WsdrainUpstreamUnready")["expr"])) == {POD_B}
    assert set(live.by_pod(alert("WebSocketErrorRateHigh")["expr"])) == {POD_B}
    assert live.by_pod(alert("WsdrainDroppedFrames")["expr"]) == {}
    assert live.by_pod(alert("WsdrainDrainOverran")["expr"]) == {}


def test_prometheus_evaluates_every_rule(live):
    deadline = time.monotonic() + 20
    while True:
        status, body = http_get(f"http://127.0.0.1:{live.prom_port}/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
    shipped = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert {r["name"] for r in rules} == shipped
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad
    active = {(a["labels"]["alertname"], a["labels"]["pod"])
              for a in json.loads(http_get(
                  f"http://127.0.0.1:{live.prom_port}/api/v1/alerts")[1])["data"]["alerts"]}
    assert ("WsdrainConnectionsAtMax", POD_A) in active
    assert ("WsdrainUpstreamUnready", POD_B) in active


def test_every_metric_in_use_is_exported(live):
    exported = set()
    for port in (live.a_admin, live.b_admin, live.c_admin):
        for line in live.metrics(port).splitlines():
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                exported.add(m.group(1))
                if m.group(2) in ("histogram", "summary"):
                    exported.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    # The webhook's own metrics come from `wsdrain webhook`, not from these sidecars:
    # they must be registered in its metrics module.
    webhook = (ROOT / "src/webhook/metrics.rs").read_text()
    missing = {}
    for where, expr in used_queries().items():
        for name in metric_names(expr) - exported:
            if name.startswith("wsdrain_webhook_") and f'"{name}"' in webhook:
                continue
            missing.setdefault(name, []).append(where)
    assert not missing, f"named in deploy/ but not exported by wsdrain: {missing}"


def test_label_values_in_use_are_emitted():
    """Label values the rules filter on (kind, reason) are ones wsdrain's source emits."""
    src = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    for r in (r for g in rule_groups() for r in g["rules"]):
        for label, values in re.findall(r'(kind|reason)[!=]~"([^"]+)"', r["expr"]) + \
                re.findall(r'(kind|reason)[!=]="([^"]+)"', r["expr"]):
            for v in values.split("|"):
                assert f'"{v}"' in src, f"{r['alert']}: {label}={v} is never emitted"


def test_promtool_check_metrics(live):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    for port in (live.a_admin, live.b_admin):
        text = live.metrics(port)
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr


def test_drain_overran_alert_counts_connections_left(live):
    # Last: this starts a drain on A. With a 1h window nobody is closed within the test,
    # so the connections "left" are exactly the ones held.
    status, _ = http_get(f"http://127.0.0.1:{live.a_admin}/drain", method="POST")
    assert status == 202
    expr = alert("WsdrainDrainOverran")["expr"]
    got = live.wait_value(expr, lambda g: POD_A in g)
    assert got == {POD_A: N_HELD}
