"""deploy/webhook validates offline: every built-in object strictly against the schemas
of Kubernetes 1.29 and newer, the cert-manager objects (CRDs, no schema shipped) for the
fields cert-manager requires, the pieces point at each other, the Deployment's args are
real `wsdrain webhook` flags, and `kubectl kustomize` renders the directory."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from k8s_schemas import validate_strict

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIR = ROOT / "deploy" / "webhook"
EXPECTED_FILES = {
    "namespace.yaml", "serviceaccount.yaml", "deployment.yaml", "poddisruptionbudget.yaml",
    "service.yaml", "mutatingwebhookconfiguration.yaml", "issuer.yaml", "certificate.yaml",
    "kustomization.yaml",
}
ISSUER_KINDS = {"selfSigned", "ca", "acme", "vault", "venafi"}


def docs():
    out = []
    for path in sorted(DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def by_kind(kind):
    return [d for _, d in docs() if d["kind"] == kind]


def one(kind, name=None):
    found = [d for d in by_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_files_are_exactly_the_listed_ones():
    assert {p.name for p in DIR.iterdir()} == EXPECTED_FILES


def check_cert_manager(doc, where):
    spec = doc.get("spec") or {}
    assert doc["apiVersion"] == "cert-manager.io/v1", where
    assert doc["metadata"].get("name") and doc["metadata"].get("namespace"), where
    if doc["kind"] == "Issuer":
        kinds = ISSUER_KINDS & set(spec)
        assert len(kinds) == 1, f"{where}: an Issuer needs exactly one of {ISSUER_KINDS}"
        if "ca" in spec:
            assert spec["ca"].get("secretName"), where
    elif doc["kind"] == "Certificate":
        assert spec.get("secretName"), f"{where}: Certificate.spec.secretName is required"
        ref = spec.get("issuerRef") or {}
        assert ref.get("name"), f"{where}: Certificate.spec.issuerRef.name is required"
        assert spec.get("commonName") or spec.get("dnsNames"), where
        for field in ("duration", "renewBefore"):
            if field in spec:
                assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", spec[field]), f"{where}: {field}"
    else:
        pytest.fail(f"{where}: unexpected cert-manager kind {doc['kind']}")


@pytest.mark.parametrize("name,doc", docs(), ids=lambda x: x if isinstance(x, str) else x["kind"])
def test_every_manifest_validates(name, doc):
    if doc["apiVersion"].startswith("cert-manager.io/"):
        check_cert_manager(doc, name)
    else:
        validate_strict(doc, name)


def test_webhook_configuration_is_safe():
    mwc = one("MutatingWebhookConfiguration")
    cert = one("Certificate", "wsdrain-webhook")
    svc = one("Service", "wsdrain-webhook")
    ann = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert ann == f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    paths = set()
    for hook in mwc["webhooks"]:
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["timeoutSeconds"] == 5
        assert hook["admissionReviewVersions"] == ["v1"]
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (svc["metadata"]["name"], svc["metadata"]["namespace"])
        assert ref["port"] in [p["port"] for p in svc["spec"]["ports"]]
        paths.add(ref["path"])
        assert [r["resources"] for r in hook["rules"]] == [["pods"]]
        exprs = hook["namespaceSelector"]["matchExpressions"]
        names = [e for e in exprs if e["key"] == "kubernetes.io/metadata.name"]
        assert names and names[0]["operator"] == "NotIn"
        assert {"kube-system", svc["metadata"]["namespace"]} <= set(names[0]["values"])
    assert paths == {"/mutate", "/mutate/namespace-enabled"}
    for name in cert["spec"]["dnsNames"]:
        assert name.startswith(f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc")


def test_deployment_is_hardened_and_uses_real_flags():
    dep = one("Deployment", "wsdrain-webhook")
    pdb = one("PodDisruptionBudget")
    cert = one("Certificate", "wsdrain-webhook")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == [cert["spec"]["secretName"]]
    binary = os.environ.get("WSDRAIN_BIN")
    if not binary:
        pytest.fail("WSDRAIN_BIN is not set")
    help_text = subprocess.run([binary, "webhook", "--help"], capture_output=True, text=True, timeout=30).stdout
    assert c["args"][0] == "webhook"
    for arg in c["args"][1:]:
        flag = arg.split("=", 1)[0]
        assert re.search(rf"\s{re.escape(flag)}\b", help_text), f"{flag} is not a wsdrain webhook flag"


def test_kubectl_kustomize_renders():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(DIR)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    assert len(rendered) == len(docs())
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "wsdrain"
        if not doc["apiVersion"].startswith("cert-manager.io/"):
            validate_strict(doc, "kubectl kustomize output")
