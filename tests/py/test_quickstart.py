"""docs/quickstart.md, every command that can run without a cluster, run: each `sh`
block is either marked `# not run here` or made only of commands this test runs (with
the built binary in place of `cargo run --quiet --`, from the checkout, `~` a fresh home).
The manifests they print, and the sample app, validate strictly for Kubernetes 1.29 and
newer. The commands that need a cluster are checked for what can be checked without
one: the k6 client gets its script on stdin and no sidecar, the files named exist, and
the install output (it holds a private key) is written outside the checkout."""

import os
import pathlib
import re
import shlex
import subprocess

import pytest
import yaml

from k8s_schemas import validate_strict
from test_deploy_webhook import check_cert_manager

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quickstart.md"


def wsdrain():
    binary = os.environ.get("WSDRAIN_BIN")
    if not binary:
        pytest.fail("WSDRAIN_BIN is not set (scripts/test sets it to the debug binary)")
    return binary


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def runnable_commands():
    out = []
    for block in blocks("sh"):
        if block.startswith("# not run here"):
            continue
        out += [line for line in block.splitlines() if line.strip()]
    return out


def run(command, home):
    """A quickstart command with the built binary for `cargo run --quiet --`, run in the
    checkout, with `> FILE` redirection as the shell would do it and `~` as `home`."""
    words = shlex.split(command)
    assert words[:4] == ["cargo", "run", "--quiet", "--"], command
    args = [wsdrain(), *words[4:]]
    target = None
    if ">" in args:
        i = args.index(">")
        args, target = args[:i], args[i + 1]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    if target:
        path = pathlib.Path(target.replace("~", str(home), 1)) if target.startswith("~/") else ROOT / target
        path.write_text(proc.stdout)
    return proc.stdout


def test_every_command_is_run_here_or_marked():
    assert runnable_commands() == [
        "cargo run --quiet -- install > ~/wsdrain-install.yaml",
        "cargo run --quiet -- inject --all -f deploy/quickstart/echo.yaml",
        "cargo run --quiet -- analyze -f deploy/quickstart/echo.yaml",
        "cargo run --quiet -- demo --clients 200 --drain-window 2s",
    ]
    for block in blocks("sh"):
        if block.startswith("# not run here"):
            assert "cargo run" not in block


def test_the_sample_app_is_shipped_as_shown():
    (app,) = blocks("yaml")
    assert app == (ROOT / "deploy/quickstart/echo.yaml").read_text(), "docs and file differ"
    assert "kubectl apply -n demo -f deploy/quickstart/echo.yaml" in DOC.read_text()


def test_the_install_output_stays_out_of_the_checkout():
    (install,) = [c for c in runnable_commands() if " install " in c + " "]
    target = shlex.split(install)[-1]
    assert target.startswith("~/"), f"{install}: the private key would land in the checkout"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "wsdrain-install.yaml" in ignored, "and a copy in the checkout is git-ignored"


def not_run_commands():
    """The commands of the `# not run here` blocks, continuation lines joined."""
    out = []
    for block in blocks("sh"):
        if block.startswith("# not run here"):
            joined = block.replace("\\\n", " ")
            out += [l.strip() for l in joined.splitlines() if l.strip() and not l.startswith("#")]
    return out


def test_the_k6_client_gets_its_script_and_no_sidecar(tmp_path):
    (k6,) = [c for c in not_run_commands() if "grafana/k6" in c]
    words = shlex.split(k6)
    dash = words.index("--")
    kubectl, k6_args = words[:dash], words[dash + 1:]
    assert "-i" in kubectl or "--stdin" in kubectl, f"without -i the script never reaches k6: {k6}"
    assert "--labels=wsdrain.io/inject=disabled" in kubectl, f"the client pod would be injected: {k6}"
    assert k6_args[0] == "run" and "-" in k6_args, k6_args
    script = k6_args[k6_args.index("<") + 1]
    source = (ROOT / script).read_text()
    for i, word in enumerate(k6_args):
        if word == "-e":
            name = k6_args[i + 1].split("=", 1)[0]
            assert f"__ENV.{name}" in source, f"{script} does not read {name}"
    # The webhook is never called for such a pod, and the injector leaves it alone.
    installed = yaml.safe_load_all(subprocess.run(
        [wsdrain(), "install"], capture_output=True, text=True, timeout=60, check=True).stdout)
    (config,) = [d for d in installed if d and d["kind"] == "MutatingWebhookConfiguration"]
    for hook in config["webhooks"]:
        sel = hook["objectSelector"]
        excluded = any(e["key"] == "wsdrain.io/inject" and e["operator"] == "NotIn"
                       and "disabled" in e["values"] for e in sel.get("matchExpressions", []))
        required = sel.get("matchLabels", {}).get("wsdrain.io/inject") == "enabled"
        assert excluded or required, hook["name"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "ws-client", "labels": {"run": "ws-client", "wsdrain.io/inject": "disabled"}},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "ws-client", "image": "docker.io/grafana/k6:1.3.0"}]}}
    out = subprocess.run([wsdrain(), "inject", "--all"], input=yaml.safe_dump(pod),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "initContainers" not in out and "wsdrain" not in out.replace("wsdrain.io/inject", "")


def test_every_file_the_quickstart_names_exists():
    for path in re.findall(r"(?<![\w/.~-])((?:deploy|docs)/[\w./-]+\.(?:ya?ml|js|md))", DOC.read_text()):
        assert (ROOT / path).exists(), path


def test_quickstart_commands_run_and_their_output_validates(tmp_path):
    (app,) = blocks("yaml")
    for doc in yaml.safe_load_all(app):
        validate_strict(doc, "quickstart echo.yaml")
    outputs = {}
    for command in runnable_commands():
        outputs[command.split()[4]] = run(command, tmp_path)

    installed = [d for d in yaml.safe_load_all((tmp_path / "wsdrain-install.yaml").read_text()) if d]
    for doc in installed:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            check_cert_manager(doc, "quickstart install")
        else:
            validate_strict(doc, "quickstart install")
    dep = next(d for d in installed if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert dep["metadata"]["namespace"] == "wsdrain-system"

    injected = [d for d in yaml.safe_load_all(outputs["inject"]) if d]
    for doc in injected:
        validate_strict(doc, "quickstart inject")
    pod = injected[0]["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "wsdrain"]
    assert "--drain-window=20s" in sidecar["args"]
    svc = injected[1]
    assert svc["spec"]["ports"][0]["targetPort"] in {p.get("name") for p in sidecar["ports"]}

    assert "K = 2: pods that may drain at once (rollout 1, no HPA, node drain 2)" in outputs["analyze"]
    assert "warning [no-pdb]" in outputs["analyze"]
    assert "warning [no-readiness-probe]" in outputs["analyze"]
    assert "warning [min-ready-seconds-short]" in outputs["analyze"]

    assert "got 1012" in outputs["demo"]
