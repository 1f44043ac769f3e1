"""docs/quickstart.md, every command that can run without a cluster, run: each `sh`
block is either marked `# not run here` or made only of commands this test runs (with
the built binary in place of `cargo run --quiet --`). The manifests they print, and the
sample app, validate strictly for Kubernetes 1.29 and newer."""

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


def run(command, cwd):
    """A quickstart command with the built binary for `cargo run --quiet --`, and
    `> FILE` redirection as the shell would do it."""
    words = shlex.split(command)
    assert words[:4] == ["cargo", "run", "--quiet", "--"], command
    args = [wsdrain(), *words[4:]]
    target = None
    if ">" in args:
        i = args.index(">")
        args, target = args[:i], args[i + 1]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=cwd)
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    if target:
        (cwd / target).write_text(proc.stdout)
    return proc.stdout


def test_every_command_is_run_here_or_marked():
    assert runnable_commands() == [
        "cargo run --quiet -- install > wsdrain-install.yaml",
        "cargo run --quiet -- inject --all -f echo.yaml",
        "cargo run --quiet -- demo --clients 200 --drain-window 2s",
    ]
    for block in blocks("sh"):
        if block.startswith("# not run here"):
            assert "cargo run" not in block


def test_quickstart_commands_run_and_their_output_validates(tmp_path):
    (app,) = blocks("yaml")
    (tmp_path / "echo.yaml").write_text(app)
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

    assert "got 1012" in outputs["demo"]
