"""`wsdrain install` output, both certificate modes, validated offline: every built-in
object strictly against the schemas of Kubernetes 1.29 and newer, cert-manager objects
for the fields cert-manager requires; the generated certificate is for the Service's
names and signed by the caBundle's CA (checked with openssl when present); the
cert-manager mode matches what deploy/webhook ships. The real TLS handshake and
AdmissionReview against the printed material are in tests/install.rs."""

import base64
import os
import shutil
import subprocess

import pytest
import yaml

from k8s_schemas import validate_strict
from test_deploy_webhook import check_cert_manager
from test_deploy_webhook import docs as deploy_webhook_docs


def wsdrain():
    binary = os.environ.get("WSDRAIN_BIN")
    if not binary:
        pytest.fail("WSDRAIN_BIN is not set (scripts/test sets it to the debug binary)")
    return binary


def install(*args):
    proc = subprocess.run([wsdrain(), "install", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


MODES = {
    "generated": [],
    "generated-ns-1.30": ["--namespace", "ws-platform", "--kubernetes-version", "1.30",
                          "--annotation-opt-in", "--", "--drain-window=60s"],
    "cert-manager": ["--cert-manager"],
}


@pytest.mark.parametrize("mode", MODES)
def test_install_output_validates(mode):
    out = install(*MODES[mode])
    kinds = [d["kind"] for d in out]
    for kind in ["Namespace", "ServiceAccount", "Service", "Deployment", "PodDisruptionBudget",
                 "MutatingWebhookConfiguration"]:
        assert kinds.count(kind) == 1, (kind, kinds)
    assert ("Secret" in kinds) == (mode != "cert-manager")
    for doc in out:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            check_cert_manager(doc, f"install {mode}")
        else:
            validate_strict(doc, f"install {mode}")
    ns = out[0]["metadata"]["name"]
    for doc in out[1:]:
        if doc["kind"] != "MutatingWebhookConfiguration":
            assert doc["metadata"]["namespace"] == ns, doc["kind"]
    dep = next(d for d in out if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_generated_certificate_is_for_the_service_and_signed_by_the_ca_bundle(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    out = install("--namespace", "ws-platform")
    secret = next(d for d in out if d["kind"] == "Secret")
    mwc = next(d for d in out if d["kind"] == "MutatingWebhookConfiguration")
    (tmp_path / "ca.pem").write_bytes(base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"]))
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "ca.pem"),
         "-verify_hostname", "wsdrain-webhook.ws-platform.svc", "-purpose", "sslserver",
         str(tmp_path / "tls.crt")],
        capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Valid long enough: at least a year from now.
    end = subprocess.run([openssl, "x509", "-checkend", str(365 * 86400), "-noout",
                          "-in", str(tmp_path / "tls.crt")], capture_output=True, timeout=30)
    assert end.returncode == 0, "the serving certificate expires within a year"


def test_cert_manager_mode_matches_deploy_webhook():
    out = install("--cert-manager")
    shipped = {(d["kind"], d["metadata"]["name"]): d for _, d in deploy_webhook_docs()}
    for doc in out:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key in shipped, f"{key} is printed but not in deploy/webhook"
        if doc["kind"] == "MutatingWebhookConfiguration":
            assert doc["webhooks"] == shipped[key]["webhooks"]
            assert doc["metadata"]["annotations"] == shipped[key]["metadata"]["annotations"]
        elif doc["kind"] in ("Certificate", "Issuer", "Service", "PodDisruptionBudget"):
            assert doc["spec"] == shipped[key]["spec"], key
    assert len(out) == len(shipped)


def test_webhook_pods_meet_the_namespace_pod_security_level():
    out = install()
    ns = next(d for d in out if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = next(d for d in out if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
    assert all(set(v) <= {"name", "secret", "configMap", "emptyDir", "projected", "downwardAPI"}
               for v in pod["volumes"])
