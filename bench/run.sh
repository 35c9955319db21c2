#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: builds release binaries, starts grantd on PostgreSQL and on
# SQLite, runs every grantd-bench scenario RUNS times (with, in the same run, pgbench
# ceilings and grantd-bench's SQLite ceilings), then prints the table of medians and
# renders the plots (bench/report.py).
#
#   bash bench/run.sh                 # full matrix, RUNS=3 (CLIENTS="1 16 32" took 22 minutes on 2 cores)
#   RUNS=1 DURATION=2s bash bench/run.sh   # a quick look
#   PROFILE=dist bash bench/run.sh     # grantd built with the dist profile (fat LTO)
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres) with pgbench and psql,
# and python3 (matplotlib is installed into a venv under target/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
CLIENTS="${CLIENTS:-1 2 4 8 16 32 64 128 256}"
CEILING_CLIENTS="${CEILING_CLIENTS:-1 16 32 64}"   # pgbench stops at max_connections
BATCHES="${BATCHES:-1,10,100,1000}"
PG_PORT=50071
SQLITE_PORT=50072
OUT="${OUT:-target/bench/$(date -u +%Y%m%dT%H%M%SZ)-${PROFILE:-release}}"
DB=grantd_bench
PG_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable"
export PGHOST=127.0.0.1 PGUSER=postgres PGSSLMODE=disable

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
log() { printf '== %s\n' "$*" >&2; }

# PROFILE=dist measures grantd as built for images (fat LTO, one codegen unit); the load
# generator is the release build either way.
PROFILE="${PROFILE:-release}"
log "building grantd ($PROFILE profile) and grantd-bench (release)"
cargo build --profile "$PROFILE" --quiet -p grantd --bin grantd
cargo build --release --quiet -p grantd-bench --bin grantd-bench
GRANTD="${CARGO_TARGET_DIR:-target}/$PROFILE/grantd"
BENCH="${CARGO_TARGET_DIR:-target}/release/grantd-bench"

log "PostgreSQL database $DB (recreated)"
psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"

SECRET="$OUT/jwt-secret"
head -c 48 /dev/urandom | base64 > "$SECRET"
chmod 600 "$SECRET"
export GRANTD_JWT_HS256_SECRET_FILE="$SECRET"
GRANTD_TOKEN="$("$GRANTD" token --subject bench --admin --ttl 24h)"
export GRANTD_TOKEN
# A caller that is not an administrator: grantd-bench seeds its rights (edit_org_users and
# the catalog, org-wide) and measures its calls as the `-delegate` scenarios.
DELEGATE_TOKEN="$("$GRANTD" token --subject bench-delegate --ttl 24h)"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # backend port url; sets STARTED to the process id
  GRANTD_DATABASE_URL="$3" "$GRANTD" serve --listen "127.0.0.1:$2" --log-format json >"$OUT/grantd-$1.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  for _ in $(seq 1 50); do
    "$GRANTD" health --addr "127.0.0.1:$2" >/dev/null 2>&1 && return
    sleep 0.2
  done
  log "grantd on $1 did not start; see $OUT/grantd-$1.log"
  exit 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_both() {
  start postgres "$PG_PORT" "$PG_URL"
  PG_PID=$STARTED
  start sqlite "$SQLITE_PORT" "sqlite://$OUT/grantd.db?mode=rwc"
  SQLITE_PID=$STARTED
}
start_both

psql -q -d "$DB" -f bench/sql/seed.sql

# grantd-bench prints one JSON line per report; tag it with the tool, backend and run.
record() { # tool backend run < grantd-bench's output
  grep '^{' | sed "s/^{/{\"tool\":\"$1\",\"backend\":\"$2\",\"run\":$3,/" | tee -a "$RESULTS" >&2
}
bench() { # backend run args...
  local backend=$1 run=$2 port=$PG_PORT; shift 2
  [ "$backend" = sqlite ] && port=$SQLITE_PORT
  "$BENCH" "$@" --addr "127.0.0.1:$port" 2>/dev/null | record grantd-bench "$backend" "$run"
}
# Values bench/sql/seed.sql created, bound as parameters like grantd's own: the add
# ceiling grants the permission grantd-bench's add names, by its id.
PERMISSION=$(psql -Atq -d "$DB" -c "SELECT id FROM permissions WHERE name = 'ceiling-p0'")
CEILING_VARIABLES=(-D org=ceiling -D rtype=bench_doc -D otype=organization -D "permission=$PERMISSION")
# pgbench's output goes to $OUT/pgbench.log; a ceiling that fails (a script the schema
# does not fit, say) is logged and left out of the results rather than stopping the run.
ceiling() { # run script clients
  local output tps
  if ! output=$(pgbench -n -M prepared "${CEILING_VARIABLES[@]}" -f "bench/sql/$2.sql" \
    -c "$3" -j 2 -T "${DURATION%s}" "$DB" 2>&1); then
    printf '== run %s, %s, %s clients: failed\n%s\n' "$1" "$2" "$3" "$output" >>"$OUT/pgbench.log"
    log "pgbench $2 at $3 clients failed; see $OUT/pgbench.log"
    return
  fi
  printf '== run %s, %s, %s clients\n%s\n' "$1" "$2" "$3" "$output" >>"$OUT/pgbench.log"
  tps=$(awk '/^tps/ {print $3}' <<<"$output")
  printf '{"tool":"pgbench","backend":"postgres","run":%s,"scenario":"%s","clients":%s,"requests_per_s":%s}\n' \
    "$1" "$2" "$3" "${tps:-0}" | tee -a "$RESULTS" >&2
}

# The SQLite ceiling: an add's two inserts in one transaction straight through sqlx, on a
# file of its own with its own tables, kept for the whole run so that it grows over the
# run as grantd's file does.
sqlite_ceiling() { # run scenario clients
  "$BENCH" "$2" --clients "$3" --duration "$DURATION" --ceiling-db "$OUT/sqlite-ceiling.db" 2>/dev/null |
    record sqlx-ceiling sqlite "$1"
}

# Each ceiling runs right after grantd's own measurement at the same concurrency: the
# machine's speed drifts from hour to hour, and a ceiling measured minutes apart from
# grantd measured the drift as much as grantd.
has_ceiling() { [[ " $CEILING_CLIENTS " == *" $1 "* ]]; }
for run in $(seq 1 "$RUNS"); do
  log "run $run of $RUNS"
  # As autovacuum would between runs (it is off on some machines, this one included): each
  # run plans against statistics of the tables as they are, not as the seed left them.
  psql -q -d "$DB" -c "VACUUM ANALYZE"
  for c in $CLIENTS; do
    for scenario in check add; do
      bench postgres "$run" "$scenario" --clients "$c" --duration "$DURATION"
      if has_ceiling "$c"; then ceiling "$run" "$scenario" "$c"; fi
    done
    if has_ceiling "$c"; then
      bench postgres "$run" add --clients "$c" --duration "$DURATION" --delegate-token "$DELEGATE_TOKEN"
    fi
    bench sqlite "$run" check --clients "$c" --duration "$DURATION"
    bench sqlite "$run" add --clients "$c" --duration "$DURATION"
    if has_ceiling "$c"; then
      sqlite_ceiling "$run" sqlite-ceiling "$c"
      sqlite_ceiling "$run" sqlite-ceiling-one-call "$c"
    fi
  done
  bench postgres "$run" health --clients 16 --duration "$DURATION"
  # At 1 client a call costs at least a bare gRPC round trip plus pgbench's transaction:
  # the bound bench/report.py prints under the ceiling table.
  bench postgres "$run" health --clients 1 --duration "$DURATION"
  for backend in postgres sqlite; do
    bench "$backend" "$run" add-batch --batch "$BATCHES" --clients 1 --requests 50
    bench "$backend" "$run" mixed --clients 32 --duration "$DURATION"
    bench "$backend" "$run" remove-user --grants 100000 --clients 1 --requests 1
  done
  bench postgres "$run" add-batch --batch 1000 --clients 1 --requests 50 --delegate-token "$DELEGATE_TOKEN"
  bench postgres "$run" remove-user --grants 100000 --clients 1 --requests 1 --delegate-token "$DELEGATE_TOKEN"
done

log "memory: fresh processes, idle and then under 256 clients"
kill "$PG_PID" "$SQLITE_PID"
wait "$PG_PID" "$SQLITE_PID" 2>/dev/null || true
start_both
sleep 2
for backend in postgres sqlite; do
  pid=$PG_PID; [ "$backend" = sqlite ] && pid=$SQLITE_PID
  printf '{"tool":"rss","backend":"%s","state":"idle","rss_kib":%s}\n' "$backend" "$(rss_kib "$pid")" >> "$RESULTS"
  peak=0
  bench "$backend" 0 mixed --clients 256 --duration "$DURATION" &
  load=$!
  while kill -0 "$load" 2>/dev/null; do
    now=$(rss_kib "$pid"); [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  printf '{"tool":"rss","backend":"%s","state":"256 clients (mixed)","rss_kib":%s}\n' "$backend" "$peak" >> "$RESULTS"
done

log "report"
python3 bench/report.py "$RESULTS" "$OUT"
