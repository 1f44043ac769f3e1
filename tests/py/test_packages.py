"""The client packages install as a user would get them: `npm pack` of clients/js and
`python -m build` of clients/python, each installed into a clean directory or venv
outside the checkout and imported there, with the licence and metadata they declare."""

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def run(args, cwd, timeout=300):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r.stdout


def test_npm_pack_installs_and_imports(tmp_path):
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node and npm are needed for the JS package (Node >= 20)")
    packed = tmp_path / "packed"
    packed.mkdir()
    out = run(["npm", "pack", "--json", "--pack-destination", str(packed)], ROOT / "clients/js")
    (info,) = json.loads(out)
    files = {f["path"] for f in info["files"]}
    assert {"index.js", "index.d.ts", "README.md", "LICENSE", "package.json"} <= files, files
    assert not any(f.startswith(("test/", "node_modules/")) for f in files), files
    tarball = packed / info["filename"]
    with tarfile.open(tarball) as t:
        meta = json.load(t.extractfile("package/package.json"))
    assert meta["license"] == "Apache-2.0"
    assert "github.com/wsdrain/wsdrain" in meta["repository"]["url"]

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    run(["npm", "install", "--no-audit", "--no-fund", "--offline", str(tarball)], app)
    script = (
        "import { reconnectDelay, ReconnectingSocket, backoffDelay } from 'wsdrain-hint';\n"
        "const hint = reconnectDelay({ code: 1012, reason: '{\"reconnect_after_ms\":250}' }, 7);\n"
        "console.log(JSON.stringify({ hint, none: reconnectDelay({ code: 1006, reason: '' }, 7),"
        " socket: typeof ReconnectingSocket, backoff: typeof backoffDelay }));\n"
    )
    (app / "check.mjs").write_text(script)
    got = json.loads(run(["node", "check.mjs"], app))
    assert got == {"hint": 250, "none": 7, "socket": "function", "backoff": "function"}, got
    assert (app / "node_modules/wsdrain-hint/index.d.ts").exists()


def test_python_build_installs_into_a_clean_venv_and_imports(tmp_path):
    dist = tmp_path / "dist"
    src = tmp_path / "src"
    # Build from a copy, so no build output lands in the checkout.
    shutil.copytree(ROOT / "clients/python", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], tmp_path, timeout=600)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta_name,) = [n for n in names if n.endswith("METADATA")]
        meta = z.read(meta_name).decode()
    assert "wsdrain_hint.py" in names, names
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert "License-Expression: Apache-2.0" in meta, meta
    assert "https://github.com/wsdrain/wsdrain" in meta
    with tarfile.open(sdist) as t:
        assert any(n.endswith("/LICENSE") for n in t.getnames())

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--no-index", "--quiet", str(wheel)], tmp_path)
    check = (
        "import json, wsdrain_hint as w\n"
        "class Rcvd: code = 1012; reason = '{\"reconnect_after_ms\":1500}'\n"
        "class Closed: rcvd = Rcvd()\n"
        "print(json.dumps({'file': w.__file__, 'hint': w.reconnect_delay(Closed(), 9.0)}))\n"
    )
    got = json.loads(run([str(py), "-c", check], tmp_path))
    assert got["hint"] == 1.5, got
    assert str(venv) in got["file"], "imported from the venv, not the checkout"
