#!/usr/bin/env bash
# Check latency as the grants table grows: grantd-bench `check` (1 client) over a fresh
# PostgreSQL database, then again once GRANTS more grants are stored, with the plan of
# grantd's check statement (EXPLAIN ANALYZE) at that size.
#
#   bash bench/growth.sh                   # 10 million grants, about 15 minutes on 2 cores
#   GRANTS=1000000 bash bench/growth.sh    # quicker
#
# The bulk grants are written with one INSERT ... SELECT from generate_series (100 per
# user on one resource each, 100 permissions), not through the API: the API path for
# writes is measured by bench/run.sh, and 10 million grants through it would take hours.
set -euo pipefail
cd "$(dirname "$0")/.."

GRANTS="${GRANTS:-10000000}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
PORT=50073
DB=grantd_growth
OUT="${OUT:-target/bench/growth-$(date -u +%Y%m%dT%H%M%SZ)}"
export PGHOST=127.0.0.1 PGUSER=postgres PGSSLMODE=disable
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
log() { printf '== %s\n' "$*" >&2; }

cargo build --release --quiet -p grantd --bin grantd -p grantd-bench --bin grantd-bench
GRANTD="${CARGO_TARGET_DIR:-target}/release/grantd"
BENCH="${CARGO_TARGET_DIR:-target}/release/grantd-bench"
psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
SECRET="$OUT/jwt-secret"
head -c 48 /dev/urandom | base64 > "$SECRET"
chmod 600 "$SECRET"
export GRANTD_JWT_HS256_SECRET_FILE="$SECRET"
GRANTD_TOKEN="$("$GRANTD" token --subject bench --admin --ttl 24h)"
export GRANTD_TOKEN
GRANTD_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
  "$GRANTD" serve --listen "127.0.0.1:$PORT" --log-format json >"$OUT/grantd.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  "$GRANTD" health --addr "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  sleep 0.2
done

measure() { # label
  for run in $(seq 1 "$RUNS"); do
    "$BENCH" check --clients 1 --connections 1 --duration "$DURATION" --addr "127.0.0.1:$PORT" \
      2>/dev/null | grep '^{' | sed "s/^{/{\"stored\":\"$1\",\"run\":$run,/" | tee -a "$RESULTS" >&2
  done
}

log "check with only grantd-bench's own 10,000 grants stored"
measure small

log "storing $GRANTS more grants"
started=$(date +%s)
psql -q -d "$DB" -v grants="$GRANTS" <<'SQL'
INSERT INTO organizations (id, display_name, created_at) VALUES ('growth', 'growth', now());
INSERT INTO permissions (id, name, description, created_at)
  SELECT gen_random_uuid(), 'growth-p' || i, '', now() FROM generate_series(0, 99) AS i;
INSERT INTO memberships (organization_id, user_id, added_at, added_by)
  SELECT 'growth', 'growth-u' || u, now(), 'growth' FROM generate_series(0, (:grants / 100) - 1) AS u;
INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by)
  SELECT 'growth', 'growth-u' || (i / 100), 'doc', 'd' || (i / 100), ids[(i % 100) + 1], now(), 'growth'
  FROM generate_series(0, :grants - 1) AS i,
       (SELECT array_agg(id ORDER BY name) AS ids FROM permissions WHERE name LIKE 'growth-p%') AS catalog;
VACUUM ANALYZE;
SQL
log "stored in $(( $(date +%s) - started )) s; $(psql -Atq -d "$DB" -c 'SELECT count(*) FROM grants') grants in all"

log "plan of grantd's check statement at this size (the generic plan its prepared statement runs)"
statement=$(grep -v '^--' bench/sql/check_list.sql)
psql -d "$DB" <<SQL | tee "$OUT/check-plan.txt" >&2
SET plan_cache_mode = force_generic_plan;
PREPARE check_permission(text) AS $statement;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
  EXECUTE check_permission('[["growth", "growth-u4242", "doc", "d4242", "growth-p7", false, "organization"],
    ["growth", "growth-u77", "doc", "d77", "growth-p8", false, "organization"]]');
SQL

log "check with $GRANTS more grants stored"
measure large

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
p50 = {s: statistics.median(r["latency_ms"]["p50"] for r in rows if r["stored"] == s) for s in ("small", "large")}
p99 = {s: statistics.median(r["latency_ms"]["p99"] for r in rows if r["stored"] == s) for s in ("small", "large")}
print("| grants stored | check p50 ms (median of runs) | check p99 ms | p50 ratio |")
print("| --- | ---: | ---: | ---: |")
print(f"| 10,000 | {p50['small']:.3f} | {p99['small']:.3f} | 1.00 |")
print(f"| 10,000 + bulk | {p50['large']:.3f} | {p99['large']:.3f} | {p50['large'] / p50['small']:.2f} |")
PY
