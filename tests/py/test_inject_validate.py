"""`wsdrain inject` over every fixture: the binary's output equals the golden file the
Rust tests check, a second pass changes nothing, and every injected document validates
strictly against the Kubernetes schemas of every version from 1.29 up (offline, with
kubernetes-validate)."""

import json
import os
import pathlib
import subprocess

import pytest
import yaml

from k8s_schemas import objects, validate_strict, versions

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "inject"
TOKEN = "golden-test-token-0123456789"
INPUTS = sorted(
    p for p in FIXTURES.iterdir() if p.suffix in (".yaml", ".json") and ".injected." not in p.name
)


def wsdrain():
    binary = os.environ.get("WSDRAIN_BIN")
    if not binary:
        pytest.fail("WSDRAIN_BIN is not set (scripts/test sets it to the debug binary)")
    return binary


def inject(text, *extra):
    proc = subprocess.run(
        [wsdrain(), "inject", "--token", TOKEN, *extra],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def load(text, suffix):
    if suffix == ".json":
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_fixtures_present():
    names = {p.name for p in INPUTS}
    for needed in [
        "deployment-guide.yaml", "statefulset.yaml", "pod-own-prestop.yaml",
        "already-injected.yaml", "opted-out.yaml", "multi-document.yaml", "list.yaml",
        "cronjob.yaml",
    ]:
        assert needed in names


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_inject_output_is_golden_idempotent_and_valid(path):
    out, _ = inject(path.read_text())
    golden = FIXTURES / f"{path.stem}.injected{path.suffix}"
    assert out == golden.read_text(), f"binary output differs from {golden.name}"
    again, _ = inject(out)
    assert again == out, "a second pass changed the output"
    for extra in ([], ["--all"], ["--classic", "--all"]):
        out, _ = inject(path.read_text(), *extra)
        for doc in load(out, path.suffix):
            for obj in objects(doc):
                validate_strict(obj, f"{path.name} {extra}")


def test_versions_cover_129_and_newer():
    vs = versions()
    assert vs[0].startswith("1.29.")
    assert len(vs) >= 2


def test_bad_yaml_exits_nonzero_naming_document_and_line():
    proc = subprocess.run(
        [wsdrain(), "inject"],
        input="kind: Pod\n---\nkind: Pod\nmetadata: {name: [x\n",
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "document 2: invalid YAML at line" in proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_uninject_of_the_golden_output_is_the_input(path):
    """The binary's `wsdrain uninject` on each golden file gives the fixture back (as
    data: YAML comments are not kept). A pod injected by wsdrain 0.1.0 carries no undo
    record: named on stderr, exit 1, left as is."""
    golden = FIXTURES / f"{path.stem}.injected{path.suffix}"
    proc = subprocess.run([wsdrain(), "uninject", "-f", str(golden)], capture_output=True,
                          text=True, timeout=30)
    assert load(proc.stdout, path.suffix) == load(path.read_text(), path.suffix)
    if path.name == "already-injected.yaml":
        assert proc.returncode == 1
        assert "0.1.0 or earlier" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
