"""The rolling-update bench in smoke mode (3 pods, 300 clients, 3 s windows, about a
minute with debug builds), so the harness cannot rot and the invariants that hold at
any size are checked on every test run: under wsdrain no connection ends without a
close frame and no message is lost, every client reconnects, and the seed's pattern
without a sidecar cuts every connection.

Runs `cargo test --bench rollout` with WSDRAIN_BENCH_SMOKE=1; the full run is
`cargo bench --bench rollout` (docs/performance.md). Needs HAProxy (the ingress,
`.ci/apt-packages.txt`); the bench installs it when absent and the test skips, saying
why, when it cannot be had.
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

WSDRAIN = {"wsdrain (staggered)", "wsdrain --drain-window 0", "wsdrain --max-connection-age"}
SEED = "seed: preStop sleep, no sidecar"
# The fleet budget scenarios and how many old pods each takes away (of the smoke's 3).
FLEET = {
    "wsdrain --fleet-max-rate: maxSurge rollout": 3,
    "wsdrain --fleet-max-rate: half scale-down": 1,
    "wsdrain --fleet-max-rate: single eviction": 1,
}


def haproxy_path():
    return shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def test_rollout_bench_smoke(tmp_path):
    # The bench installs haproxy only as root; say so rather than fail.
    if haproxy_path() is None and os.geteuid() != 0:
        pytest.skip("haproxy not installed and not root to install it "
                    "(Debian package in .ci/apt-packages.txt)")
    env = dict(os.environ, WSDRAIN_BENCH_SMOKE="1", WSDRAIN_BENCH_OUT=str(tmp_path))
    env.pop("WSDRAIN_BIN", None)  # the bench uses the binary Cargo builds for it
    for knob in [k for k in env if k.startswith("WSDRAIN_ROLLOUT_")]:
        env.pop(knob)  # the smoke defaults, whatever the caller's shell has set
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
        assert haproxy_path() is None, out
        pytest.skip("HAProxy is not installed and could not be installed: " + run.stderr[-300:])
    assert run.returncode == 0, out

    doc = json.loads((tmp_path / "rollout.json").read_text())
    assert doc["smoke"] is True
    s = doc["settings"]
    assert s["pods"] == 3 and s["clients"] == 300
    results = {r["contender"]: r for r in doc["results"]}
    assert set(results) == WSDRAIN | {SEED} | set(FLEET), out
    for name, r in results.items():
        if name in FLEET:
            continue
        assert r["error"] is None, r["error"]
        assert r["connected_initially"] == r["clients"] == s["clients"], name
        # Every client sat on an old pod, and every old pod went away.
        assert r["reconnects"] >= r["clients"], name
        assert sum(r["reconnects_per_100ms"]) <= r["reconnects"]
        assert r["peak_reconnects_per_100ms"] == max(r["reconnects_per_100ms"]) > 0
        assert r["peak_reconnects_per_s"] >= r["peak_reconnects_per_100ms"]
        assert r["messages_sent"] > 0 and r["echo_mismatches"] == 0, name
        assert r["messages_received_by_apps"] <= r["messages_sent"], name
        assert len(r["terminations"]) == s["pods"]
        assert len(r["new_pods_ready_at_s"]) == s["pods"]
        # Nobody is stranded: each client is connected, or waiting out its hint/backoff.
        assert r["connected_at_end"] + r["waiting_to_reconnect_at_end"] == r["clients"], name
        ts = r["pods_series_t_s"]
        assert len(r["pods_series"]) == 2 * s["pods"]
        assert all(len(v) == len(ts) for v in r["pods_series"].values())
        assert r["ingress_peak_cpu_pct"] is not None
        for key in ("imbalance_end", "imbalance_after"):
            assert r[key] is None or r[key] >= 1.0, (name, key, r[key])

    for name in WSDRAIN:
        r = results[name]
        # The invariants wsdrain promises at any size.
        assert r["ended_without_close_frame"] == 0, (name, r["close_codes"])
        assert r["messages_lost"] == 0, (name, r["messages_sent"], r["messages_received_by_apps"])
        assert set(r["close_codes"]) == {"1012"}, (name, r["close_codes"])
        assert r["closes_with_hint"] == r["close_codes"]["1012"], name
        assert all(t["prestop_answer"].startswith("HTTP/1.1 200") for t in r["terminations"])
        # The balancer took every draining pod out (readiness turned 503 in time).
        assert all(o["removed_after_s"] is not None for o in r["out_of_balancer"]), name
        assert r["sidecar_peak_cpu_pct_max"] is not None
    for name in ("wsdrain (staggered)", "wsdrain --drain-window 0"):
        # No age limit: after the rollout every client holds a connection again.
        assert results[name]["connected_at_end"] == s["clients"], name
        assert results[name]["imbalance_after"] is not None

    for name, leaving in FLEET.items():
        r = results[name]
        assert r["error"] is None, r["error"]
        assert len(r["terminations"]) == leaving, name
        assert r["reconnects"] >= sum(t["connections_at_start"] for t in r["terminations"]), name
        # The invariants hold under a budget too.
        assert r["ended_without_close_frame"] == 0, (name, r["close_codes"])
        assert r["messages_lost"] == 0, name
        assert set(r["close_codes"]) == {"1012"}, (name, r["close_codes"])
        assert r["connected_at_end"] + r["waiting_to_reconnect_at_end"] == r["clients"], name
        f = r["fleet"]
        assert f["fleet_max_rate"] == s["fleet_max_rate"]
        # Against the budget, with room for a busy 2-core box (the real run's bounds are
        # 1.1x per second and 1.5x per 100 ms, on a quiet machine).
        assert f["honouring_peak_per_s_to_share_r"] <= 1.5, (name, f)
        assert f["all_peak_per_s_to_r"] <= 1.5, (name, f)
    rollout = results["wsdrain --fleet-max-rate: maxSurge rollout"]
    # K = 2 at 40/s: each pod closes its ~100 connections at 20/s, stretching the 3 s
    # window to about 5 s.
    assert rollout["fleet"]["max_concurrent_drains"] == 2
    assert all(t["exited_s"] - t["started_s"] >= s["drain_delay_s"] + 4.0
               for t in rollout["terminations"] if t["connections_at_start"] >= 90)

    staggered = results["wsdrain (staggered)"]
    abrupt = results["wsdrain --drain-window 0"]
    # The stagger lasts the announce phase plus the window; without a window it does not.
    assert staggered["rollout_s"] >= s["drain_delay_s"] + 0.8 * s["drain_window_s"]
    assert abrupt["rollout_s"] < staggered["rollout_s"]
    assert staggered["expected_peak_per_100ms"] > 0
    assert abrupt["expected_peak_per_100ms"] is None  # no window, no even rate

    seed = results[SEED]
    # The seed's pattern: SIGTERM kills the app, every connection is cut without a close frame.
    assert seed["ended_without_close_frame"] >= seed["clients"], seed["close_codes"]
    assert seed["closes_with_hint"] == 0
    assert seed["sidecar_peak_cpu_pct_max"] is None
