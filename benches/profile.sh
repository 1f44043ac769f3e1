#!/usr/bin/env bash
# Profiles a relay under 64-byte echo load (50 connections), as in docs/performance.md.
#   benches/profile.sh perf    wsdrain           # perf record -e cpu-clock -g, 8 s
#   benches/profile.sh strace  wsdrain|relay|haproxy   # syscall counts, 3 s
# Needs `cargo bench --no-run --bench proxies` first (the echo app and load generator are
# hidden modes of the proxies bench binary); perf from Debian's linux-perf, strace.
set -euo pipefail
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
B=$(ls -t "$CARGO_TARGET_DIR"/release/deps/proxies-* | grep -v '\.d$' | head -1)
W=$CARGO_TARGET_DIR/release/wsdrain
tool=$1 what=${2:-wsdrain}
ulimit -n "$(ulimit -Hn)"
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PA=$(fp) PP=$(fp) PAD=$(fp)
tmp=$(mktemp -d)
"$B" __echo-app "$PA" & APP=$!
case $what in
  wsdrain) "$W" proxy --listen "127.0.0.1:$PP" --upstream "127.0.0.1:$PA" --admin "127.0.0.1:$PAD" \
             --log-level warn --max-connections 9000 & P=$! ;;
  relay) "$B" __tcp-relay "$PP" "$PA" & P=$! ;;
  haproxy) printf 'global\n maxconn 9000\n nbthread 2\ndefaults\n mode http\n timeout connect 5s\n timeout client 60s\n timeout server 60s\n timeout tunnel 1h\nfrontend fe\n bind 127.0.0.1:%s\n default_backend app\nbackend app\n server app 127.0.0.1:%s\n' "$PP" "$PA" > "$tmp/h.cfg"
           haproxy -db -f "$tmp/h.cfg" 2>/dev/null & P=$! ;;
esac
trap 'kill $P $APP 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1
"$B" __load "$PP" 50 64 12 > "$tmp/load.txt" & L=$!
sleep 2
case $tool in
  perf) perf record -e cpu-clock -F 1999 -g -p "$P" -o "$tmp/perf.data" -- sleep 8 2>/dev/null
        perf report -i "$tmp/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep '%' | grep -v '^#' | grep -v -- '--' | head -6
        perf report -i "$tmp/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | head -40 ;;
  strace) timeout -s INT 3 strace -c -f -p "$P" -o "$tmp/strace.txt" || true
          head -12 "$tmp/strace.txt" ;;
esac
wait $L
cat "$tmp/load.txt"
