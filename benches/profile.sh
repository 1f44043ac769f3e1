#!/usr/bin/env bash
# Profiles a relay under 64-byte echo load (50 connections), as in docs/performance.md.
#   benches/profile.sh perf    wsdrain           # perf record -e cpu-clock -g, 8 s
#   benches/profile.sh strace  wsdrain|relay|haproxy   # syscall counts, 3 s
# Needs `cargo bench --no-run --bench proxies` first (the echo app and load generator are
# hidden modes of the proxies bench binary); perf from Debian's linux-perf, strace.
#
# Counts per round trip (independent of how loaded the machine is; how experiments are
# decided, see docs/performance.md "Counting per round trip"):
#   benches/profile.sh count callgrind|strace|sched [BINARY]
# BINARY defaults to target/release/wsdrain; KEEP=FILE keeps the callgrind dump. Needs `cargo build --release --example rt_driver`.
# The driver opens CONNS (50) WebSockets, warms each up, then the counters are zeroed and
# N (20000) SIZE-byte (64) echo round trips run; the figure printed is the count / N.
# callgrind: user-space instructions (valgrind); strace: syscalls by name (strace -c -f);
# sched: context switches and on-CPU ns of all the proxy's threads (/proc/PID/task/*).
#
# The same counts per delivered message of the push scenario (the app bursts to every
# client, the clients only listen):
#   benches/profile.sh count-push callgrind|strace|sched [BINARY]
# Needs `cargo bench --no-run --bench proxies` (the bench binary is the app and the
# clients). CONNS (50) clients, BURSTS (200) bursts of one SIZE-byte (64) message to each,
# every INTERVAL ms (100); the figure printed is the count / (CONNS x BURSTS). Each client
# also sends the proxy one 8-byte start frame (1 message in BURSTS+1).
set -euo pipefail
if [ "${1:-}" = count ] || [ "${1:-}" = count-push ]; then
  mode=$1
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
  how=${2:?callgrind, strace or sched} W=${3:-$CARGO_TARGET_DIR/release/wsdrain}
  D=$CARGO_TARGET_DIR/release/examples/rt_driver
  N=${N:-20000} CONNS=${CONNS:-50} SIZE=${SIZE:-64}
  B=$(ls -t "$CARGO_TARGET_DIR"/release/deps/proxies-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
  BURSTS=${BURSTS:-200} INTERVAL=${INTERVAL:-100}
  unit="round trip"
  if [ "$mode" = count-push ]; then
    [ -x "$B" ] || { echo "run cargo bench --no-run --bench proxies first" >&2; exit 1; }
    N=$((CONNS * BURSTS)) unit="delivered message"
  fi
  ulimit -n "$(ulimit -Hn)"
  fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
  PA=$(fp) PP=$(fp) PAD=$(fp)
  tmp=$(mktemp -d)
  if [ "$mode" = count-push ]; then "$B" __echo-app "$PA" & APP=$!; else "$D" echo "$PA" & APP=$!; fi
  pre=()
  [ "$how" = callgrind ] && pre=(valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" -q)
  "${pre[@]}" "$W" proxy --listen "127.0.0.1:$PP" --upstream "127.0.0.1:$PA" --admin "127.0.0.1:$PAD" \
     --log-level warn --max-connections 9000 & P=$!
  trap 'kill -KILL $P 2>/dev/null; kill $APP 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
  for _ in $(seq 600); do
    python3 -c "import socket,sys;socket.create_connection(('127.0.0.1',$PP),0.2)" 2>/dev/null && break; sleep 0.1
  done
  mkfifo "$tmp/gate"
  if [ "$mode" = count-push ]; then
    "$B" __push-load "$PP" "$CONNS" "$BURSTS" "$SIZE" "$INTERVAL" < "$tmp/gate" > "$tmp/load.txt" & L=$!
  else
    "$D" load "$PP" "$CONNS" "$N" "$SIZE" --gate < "$tmp/gate" > "$tmp/load.txt" & L=$!
  fi
  exec 3>"$tmp/gate"
  for _ in $(seq 1200); do grep -q warm "$tmp/load.txt" && break; sleep 0.1; done
  sched() { # context switches, on-CPU ns: summed over the proxy's threads
    cat /proc/$P/task/*/status | awk '/ctxt_switches/ {c+=$2} END {printf "%d ", c}'
    cat /proc/$P/task/*/schedstat | awk '{n+=$1} END {print n}'
  }
  case $how in
    callgrind) callgrind_control -z $P >/dev/null 2>&1 || echo "callgrind_control -z failed" >&2 ;;
    strace) strace -c -f -p $P -o "$tmp/strace.txt" & S=$!; sleep 1 ;;
    sched) read -r c0 n0 < <(sched) ;;
  esac
  echo go >&3
  wait $L
  cat "$tmp/load.txt" | grep done
  case $how in
    callgrind) callgrind_control -d $P >/dev/null 2>&1 || echo "callgrind_control -d failed" >&2
      for _ in $(seq 300); do grep -qs '^totals:' "$tmp"/cg.out.* && break; sleep 0.1; done
      tot=$(awk '/^totals:/ {t=$2} END {print t}' "$tmp"/cg.out.*)
      echo "instructions per $unit: $((tot / N)) (total $tot, $N ${unit}s)"
      # KEEP=file keeps the dump for callgrind_annotate.
      if [ -n "${KEEP:-}" ]; then cp "$(ls "$tmp"/cg.out.* | tail -1)" "$KEEP"; fi ;;
    strace) kill -INT $S; wait $S || true
      awk -v n="$N" -v u="$unit" 'NR>2 && $0 !~ /^-/ && NF>=5 {c=$4; name=$NF; printf "%-16s %8.2f per %s\n", name, c/n, u}' "$tmp/strace.txt" ;;
    sched) read -r c1 n1 < <(sched)
      echo "context switches per $unit: $(python3 -c "print(round(($c1-$c0)/$N,3))")"
      echo "proxy on-CPU us per $unit: $(python3 -c "print(round(($n1-$n0)/$N/1000,2))")" ;;
  esac
  exit 0
fi
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
