"""The benches in smoke mode, so the harness cannot rot.

Runs `cargo test --bench proxies --bench drain --bench frame_tracker` with
WSDRAIN_BENCH_SMOKE=1 (a second or so per contender, about 40 s in all with debug
builds), then checks that the JSON it wrote holds every contender with sane figures. The
full runs are `cargo bench --bench <name>` / `benches/run-all.sh` (docs/performance.md).
Needs nginx and haproxy (`.ci/apt-packages.txt`); the benches install them when absent.
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_benches_run_in_smoke_mode(tmp_path):
    # The benches install nginx and haproxy only as root; say so rather than fail.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in ("nginx", "haproxy") if shutil.which(b, path=path) is None]
    if missing and os.geteuid() != 0:
        pytest.skip(f"{' and '.join(missing)} not installed and not root to install them "
                    "(Debian packages in .ci/apt-packages.txt)")
    env = dict(os.environ, WSDRAIN_BENCH_SMOKE="1", WSDRAIN_BENCH_OUT=str(tmp_path))
    env.pop("WSDRAIN_BIN", None)  # the benches use the binary Cargo builds for them
    run = subprocess.run(
        ["cargo", "test", "--bench", "proxies", "--bench", "drain", "--bench", "frame_tracker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Success" in run.stdout + run.stderr  # criterion ran its cases once

    proxies = json.loads((tmp_path / "proxies.json").read_text())
    assert proxies["smoke"] is True
    seen = {(r["scenario"], r["contender"]) for r in proxies["echo"]}
    contenders = {"direct", "wsdrain", "nginx", "haproxy", "tcp-relay"}
    for scenario in {r["scenario"] for r in proxies["echo"]}:
        assert {c for s, c in seen if s == scenario} == contenders
    for r in proxies["echo"]:
        assert r["round_trips_per_s"] > 0 and r["errors"] == 0, r
        assert r["p50_us"] <= r["p99_us"] <= r["p999_us"], r
        if r["contender"] != "direct":
            assert r["ratio_to_direct"] > 0 and r["proxy_cpu_us_per_round_trip"] > 0, r
        # The figures are medians of the rounds; each round is in the JSON too.
        assert len(r["rounds"]) == proxies["settings"]["rounds"], r
        rates = sorted(x["round_trips_per_s"] for x in r["rounds"])
        assert rates[0] <= r["round_trips_per_s"] <= rates[-1], r
    # The targets of issue 17 are reported (measured, never asserted).
    names = [t["target"] for t in proxies["targets"]]
    assert "small_50: wsdrain proxy CPU per round trip ≤ nginx's" in names, names
    assert "small_50: wsdrain ≥ 1.10× haproxy round trips/s" in names, names
    # Every contender idle, plus wsdrain with each client stopped inside a frame header.
    assert {r["contender"] for r in proxies["idle_rss"]} == contenders | {"wsdrain_mid_header"}
    assert "| wsdrain, each stopped mid-header |" in (tmp_path / "proxies.md").read_text()
    assert (tmp_path / "proxies.md").read_text().count("| wsdrain |") >= 4

    drain = json.loads((tmp_path / "drain.json").read_text())
    results = {r["contender"]: r for r in drain["results"]}
    assert set(results) == {
        "wsdrain (staggered)",
        "wsdrain --drain-window 0",
        "haproxy soft-stop",
        "nginx stop",
    }
    for r in results.values():
        assert r["connected"] == r["clients"] == r["reconnects"], r
        assert sum(r["series_per_100ms"]) == r["reconnects"], r
    staggered = results["wsdrain (staggered)"]
    abrupt = results["wsdrain --drain-window 0"]
    # Every wsdrain close carries the configured code and the reconnect hint.
    assert staggered["close_codes"] == {"1012": staggered["clients"]}
    assert staggered["closes_with_reconnect_hint"] == staggered["clients"]
    # The stagger takes about the window; the abrupt close does not.
    assert staggered["time_to_empty_s"] >= 0.8 * drain["settings"]["drain_window_s"]
    assert abrupt["time_to_empty_s"] < staggered["time_to_empty_s"]
    # nginx and HAProxy close tunnels without a close frame.
    for name in ("haproxy soft-stop", "nginx stop"):
        assert all(k.startswith("no close frame") for k in results[name]["close_codes"]), results[name]
