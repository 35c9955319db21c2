#!/usr/bin/env bash
# Resident memory of grantd (release build) with 1,000 open WatchChanges streams: before,
# while they are open (idle, then reading 1,000 changes each), after they close, and
# with streams whose client reads nothing (see bench/watchers.py). Loopback only, one
# fresh SQLite database; about a minute.
#
#   pip install -r clients/python/requirements.txt && python3 clients/python/generate.py
#   bash bench/watchers.sh                  # JSON lines, also in $OUT/results.jsonl
#   WATCHERS=200 bash bench/watchers.sh     # fewer streams
set -euo pipefail
cd "$(dirname "$0")/.."

WATCHERS="${WATCHERS:-1000}"
PORT="${PORT:-50074}"
METRICS_PORT="${METRICS_PORT:-50075}"
PYTHON="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$TARGET/bench/watchers-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

cargo build --release --quiet --bin grantd
export GRANTD_JWT_HS256_SECRET_FILE="$OUT/jwt-secret"
head -c 48 /dev/urandom | base64 > "$GRANTD_JWT_HS256_SECRET_FILE"
chmod 600 "$GRANTD_JWT_HS256_SECRET_FILE"
GRANTD_TOKEN="$("$TARGET/release/grantd" token --subject bench --admin --ttl 1h)"
export GRANTD_TOKEN

# Every stream is the one caller's: lift the per-caller limit to the process's.
"$TARGET/release/grantd" serve --listen "127.0.0.1:$PORT" --database-url "sqlite://$OUT/grantd.db?mode=rwc" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --watch-max-streams "$WATCHERS" --watch-max-per-caller "$WATCHERS" \
  >"$OUT/grantd.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  "$TARGET/release/grantd" health --addr "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  sleep 0.2
done

export GRANTD_ADDR="127.0.0.1:$PORT" GRANTD_METRICS="127.0.0.1:$METRICS_PORT" GRANTD_PID="$SERVER" WATCHERS
after() { # step: once the client process has gone, and with it every connection
  sleep 3
  local rss streams connections
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status")
  streams=$(curl -s "http://$GRANTD_METRICS/metrics" | awk '/^grantd_watchers / {print $2}')
  connections=$(curl -s "http://$GRANTD_METRICS/metrics" | awk '/^grantd_connections / {print $2}')
  printf '{"step": "%s", "rss_kib": %s, "streams_open": %s, "connections_open": %s}\n' \
    "$1" "$rss" "$streams" "$connections"
}
{
  "$PYTHON" bench/watchers.py setup
  "$PYTHON" bench/watchers.py reading
  after "after the reading streams closed"
  "$PYTHON" bench/watchers.py unread
  after "after the unread streams' client left"
} | tee "$OUT/results.jsonl"
