#!/usr/bin/env bash
# CPU time per request of each party sharing the machine: grantd, the load generator and
# PostgreSQL (all its processes), read from /proc between 6 and 16 s into an 18 s run, so
# that seeding is left out. Each figure is CPU microseconds per request served.
#
#   bash bench/cpu_per_request.sh GRANTD_PID ADDR SCENARIO CLIENTS [GRANTD-BENCH OPTIONS...]
#   e.g. bash bench/cpu_per_request.sh "$(pgrep -f 'grantd serve' | head -1)" 127.0.0.1:50051 check 16
#
# Needs GRANTD_TOKEN and a release build of grantd-bench (`cargo build --release -p grantd-bench`:
# target/release/grantd-bench, or under $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
grantd_pid=$1 addr=$2 scenario=$3 clients=$4
shift 4
from=6 to=16
hz=$(getconf CLK_TCK)

ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
postgres_ticks() {
  local total=0 pid
  for pid in $(pgrep -u postgres postgres || true); do total=$((total + $(ticks_of "$pid"))); done
  echo "$total"
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
"${CARGO_TARGET_DIR:-target}/release/grantd-bench" "$scenario" --clients "$clients" --duration 18s --addr "$addr" "$@" >"$out" 2>/dev/null &
bench_pid=$!
sleep "$from"
g0=$(ticks_of "$grantd_pid") b0=$(ticks_of "$bench_pid") p0=$(postgres_ticks)
sleep $((to - from))
g1=$(ticks_of "$grantd_pid") b1=$(ticks_of "$bench_pid") p1=$(postgres_ticks)
wait "$bench_pid"

rps=$(grep '^{' "$out" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["requests_per_s"])')
python3 - "$rps" $((to - from)) "$hz" $((g1 - g0)) $((b1 - b0)) $((p1 - p0)) "$scenario" "$clients" <<'PY'
import sys
rps, seconds, hz = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
grantd, bench, postgres = (int(t) for t in sys.argv[4:7])
served = rps * seconds
per = lambda t: t / hz / served * 1e6
print(f"{sys.argv[7]} at {sys.argv[8]} clients: {rps:.0f} req/s; CPU us per request: "
      f"grantd {per(grantd):.0f}, grantd-bench {per(bench):.0f}, postgres {per(postgres):.0f}, "
      f"total {per(grantd + bench + postgres):.0f}")
PY
