#!/usr/bin/env bash
# Bulk import and export (BulkService through `grantd import` / `grantd export`, release
# build, loopback): GRANTS grants (10 per user, 10 organizations, 10 permissions) imported
# into a new database, then exported, RUNS times each; grantd's resident memory sampled
# every 0.2 s (before, the highest while importing and while exporting). Over PostgreSQL
# by default (a new database per import run), BACKEND=sqlite for a SQLite file.
#
#   bash bench/bulk.sh                       # JSON lines, also in $OUT/results.jsonl
#   GRANTS=100000 RUNS=1 bash bench/bulk.sh  # a quick look
#   BATCH=5000 bash bench/bulk.sh            # records per batch (grantd import --batch-size)
set -euo pipefail
cd "$(dirname "$0")/.."

GRANTS="${GRANTS:-1000000}"
RUNS="${RUNS:-3}"
BATCH="${BATCH:-1000}"
BACKEND="${BACKEND:-postgres}"
PORT="${PORT:-50076}"
PG_URL="${GRANTD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$TARGET/bench/bulk-$(date -u +%Y%m%dT%H%M%SZ)}"
GRANTD="$TARGET/release/grantd"
mkdir -p "$OUT"

cargo build --release --quiet --bin grantd
SECRET="$OUT/jwt-secret"
head -c 48 /dev/urandom | base64 > "$SECRET"
chmod 600 "$SECRET"
GRANTD_TOKEN="$("$GRANTD" token --jwt-hs256-secret-file "$SECRET" --subject bench --admin --ttl 2h)"
export GRANTD_TOKEN

# The file: organizations, permissions, then per user a membership and ten grants.
FILE="$OUT/grants.jsonl"
python3 - "$GRANTS" "$FILE" <<'PY'
import json, sys
grants, path = int(sys.argv[1]), sys.argv[2]
users = grants // 10
with open(path, "w") as out:
    for o in range(10):
        out.write(json.dumps({"organization": {"id": f"org{o}", "display_name": f"Org {o}"}}) + "\n")
    for p in range(10):
        out.write(json.dumps({"permission": {"name": f"documents:p{p}"}}) + "\n")
    for u in range(users):
        org, user = f"org{u % 10}", f"user{u:07d}"
        out.write(json.dumps({"membership": {"organization_id": org, "user_id": user}}) + "\n")
        for p in range(10):
            resource = {"type": "folder", "id": f"f{(u + p) % 1000}"} if p else None
            line = {"organization_id": org, "user_id": user, "permission": f"documents:p{p}"}
            if resource:
                line["resource"] = resource
            out.write(json.dumps({"grant": line}) + "\n")
PY
RECORDS=$(wc -l < "$FILE")

SERVER=""
stop_server() { [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true; SERVER=""; }
trap stop_server EXIT

start_server() { # database URL
  "$GRANTD" serve --listen "127.0.0.1:$PORT" --database-url "$1" --jwt-hs256-secret-file "$SECRET" \
    >"$OUT/grantd.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do
    "$GRANTD" health --addr "127.0.0.1:$PORT" >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "grantd did not start; see $OUT/grantd.log" >&2
  exit 1
}

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }

# Runs a command (its output to $1, its errors to $2) while sampling grantd's RSS;
# prints "seconds max_rss_kib".
measure() {
  local stdout=$1 stderr=$2 peak start end sampler
  shift 2
  peak=$(rss)
  ( while sleep 0.2; do rss; done ) > "$OUT/rss.samples" 2>/dev/null &
  sampler=$!
  start=$(date +%s.%N)
  "$@" >"$stdout" 2>"$stderr"
  end=$(date +%s.%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  peak=$(sort -n "$OUT/rss.samples" <(echo "$peak") | tail -n 1)
  echo "$(echo "$end - $start" | bc) $peak"
}

record() { # phase run seconds rss_before rss_peak
  printf '{"backend": "%s", "phase": "%s", "run": %s, "grants": %s, "records": %s, "batch": %s, "seconds": %.2f, "grants_per_s": %.0f, "rss_before_kib": %s, "rss_peak_kib": %s}\n' \
    "$BACKEND" "$1" "$2" "$GRANTS" "$RECORDS" "$BATCH" "$3" "$(echo "$GRANTS / $3" | bc -l)" "$4" "$5" | tee -a "$OUT/results.jsonl"
}

for run in $(seq 1 "$RUNS"); do
  if [[ "$BACKEND" == postgres ]]; then
    psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS grantd_bulk WITH (FORCE)" -c "CREATE DATABASE grantd_bulk"
    URL="${PG_URL%/*}/grantd_bulk"
  else
    rm -f "$OUT"/bulk.db*
    URL="sqlite://$OUT/bulk.db?mode=rwc"
  fi
  start_server "$URL"
  before=$(rss)
  read -r seconds peak < <(measure "$OUT/import-$run.txt" "$OUT/import-$run.err" \
    "$GRANTD" import --addr "127.0.0.1:$PORT" --batch-size "$BATCH" "$FILE")
  grep -q " 0 rejected, 0 not written" "$OUT/import-$run.txt" || { cat "$OUT/import-$run.txt" >&2; exit 1; }
  record import "$run" "$seconds" "$before" "$peak"
  before=$(rss)
  read -r seconds peak < <(measure "$OUT/export.jsonl" "$OUT/export-$run.err" "$GRANTD" export --addr "127.0.0.1:$PORT")
  exported=$(grep -c '^{"grant"' "$OUT/export.jsonl")
  [[ "$exported" == "$GRANTS" ]] || { echo "exported $exported grants, not $GRANTS" >&2; exit 1; }
  record export "$run" "$seconds" "$before" "$peak"
  stop_server
done
