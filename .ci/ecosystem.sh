#!/usr/bin/env bash
# The gRPC ecosystem around grantd: buf lint and buf breaking on proto/, buf generate
# with buf.gen.yaml, hadolint on the Dockerfile, deploy/ checked against the binary,
# README.md's grpcurl session replayed, the Python and TypeScript example clients
# tested against a live grantd, and the web console: its committed build compared with
# its sources, its flows played in headless Chromium over SQLite and PostgreSQL.
#
# Runs from a fresh clone after `cargo build` (GRANTD_BIN, default target/debug/grantd),
# unattended (CI=true, no stdin). Needs python3 (3.11+) with venv, node 20 + npm, and
# reaches only PyPI, npm and Debian's packages (chromium, installed when missing).
# Installs into the repository (clients/python/.venv, deploy/.venv, console/.venv,
# clients/typescript/node_modules, console/node_modules), so a second run is quick.
#
# BUF_BREAKING_AGAINST overrides what buf breaking compares with (default: the
# previous commit, `.git#ref=HEAD~1,subdir=proto`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

START=$SECONDS
section_start=$SECONDS
log() {
  if [[ -n "${section_name:-}" ]]; then printf -- '-- %s: %ss\n' "$section_name" "$((SECONDS - section_start))"; fi
  section_name=$*
  section_start=$SECONDS
  printf '\n== ecosystem: %s\n' "$*"
}

GRANTD_BIN=${GRANTD_BIN:-target/debug/grantd}
[[ "$GRANTD_BIN" = /* ]] || GRANTD_BIN="$ROOT/$GRANTD_BIN"
if [[ ! -x "$GRANTD_BIN" ]]; then
  echo "grantd binary not found at $GRANTD_BIN: run \`cargo build\` first or set GRANTD_BIN" >&2
  exit 1
fi
export GRANTD_BIN

# Installs are skipped when a stamp says they were done for the same lock file.
stamp() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# A venv that works, made anew when it is missing or broken (e.g. moved machines).
venv() {
  local dir=$1 req=$2
  if ! "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$dir"
    python3 -m venv "$dir"
  fi
  if [[ "$(cat "$dir/.ecosystem-stamp" 2>/dev/null)" != "$(stamp "$req")" ]]; then
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    stamp "$req" > "$dir/.ecosystem-stamp"
  else
    echo "$dir: up to date with $req"
  fi
}

# npm ci for a package directory, skipped when its lock file has not changed.
npm_install() {
  local dir=$1 npm_stamp=$1/node_modules/.ecosystem-stamp
  if [[ "$(cat "$npm_stamp" 2>/dev/null)" != "$(stamp "$dir/package-lock.json")" ]]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    stamp "$dir/package-lock.json" > "$npm_stamp"
  else
    echo "$dir/node_modules: up to date with package-lock.json"
  fi
}

log "install: npm ci (clients/typescript, console), pip (clients/python, deploy, console), chromium"
python3 --version
node --version
npm_install clients/typescript
npm_install console
venv clients/python/.venv clients/python/requirements.txt
venv deploy/.venv deploy/requirements.txt
venv console/.venv console/tests/requirements.txt
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [[ -z "$CHROMIUM" ]]; then
  (apt-get update -q && apt-get install -y -q --no-install-recommends chromium) > /tmp/grantd-chromium-install.log 2>&1 \
    || { tail -n 30 /tmp/grantd-chromium-install.log; exit 1; }
  CHROMIUM=$(command -v chromium)
fi
export CHROMIUM
"$CHROMIUM" --version
BUF="$ROOT/clients/typescript/node_modules/.bin/buf"
"$BUF" --version

log "buf lint (proto/buf.yaml: STANDARD)"
"$BUF" lint proto
echo "buf lint: no findings"

log "buf breaking (FILE) against the previous commit"
against=${BUF_BREAKING_AGAINST:-}
if [[ -z "$against" ]]; then
  if [[ "$(git rev-parse --is-shallow-repository 2>/dev/null)" == true ]]; then
    echo "shallow clone: the previous commit may be missing; fetching one more" >&2
    git fetch -q --deepen=1 || true
  fi
  if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
    echo "SKIP: HEAD has no parent commit (first commit), nothing to compare with"
  elif [[ -z "$(git ls-tree -d HEAD~1 proto/grants)" ]]; then
    echo "SKIP: the previous commit has no proto/grants, nothing to compare with"
  else
    against=".git#ref=HEAD~1,subdir=proto"
  fi
fi
if [[ -n "$against" ]]; then
  echo "comparing proto/ with $against ($(git log -1 --format='%h %s' HEAD~1 2>/dev/null || echo "$against"))"
  "$BUF" breaking proto --against "$against"
  echo "buf breaking: no breaking changes"
fi

log "buf generate (buf.gen.yaml, local plugins only) into gen/"
PATH="$ROOT/clients/typescript/node_modules/.bin:$ROOT/clients/python/.venv/bin:$PATH" "$BUF" generate
echo "generated $(find gen -type f | wc -l) files: $(find gen -type f -name '*.ts' | wc -l) TypeScript, $(find gen -type f -name '*.py' | wc -l) Python"

log "hadolint Dockerfile"
deploy/.venv/bin/hadolint --version
deploy/.venv/bin/hadolint Dockerfile
echo "hadolint: no findings"

log "deploy/: Kubernetes and compose checked against $GRANTD_BIN"
deploy/.venv/bin/python deploy/check_deploy.py "$GRANTD_BIN"

log "README.md: its grpcurl session replayed against a fresh grantd"
deploy/.venv/bin/python .ci/readme_transcript.py --grantd "$GRANTD_BIN" --grpcurl "$ROOT/deploy/.venv/bin/grpcurl"

log "Python client (grpcio): generate stubs, pytest against a live grantd"
(
  cd clients/python
  .venv/bin/python generate.py
  .venv/bin/python -m pytest -p no:cacheprovider
)

log "TypeScript client (@grpc/grpc-js): generate types, tsc, node --test against a live grantd"
(
  cd clients/typescript
  npm run -s generate >/dev/null
  npm run -s typecheck
  echo "tsc: no errors"
  npm test
)

log "console: console/dist rebuilt from console/src (buf generate, tsc, esbuild) matches the committed files"
(
  cd console
  npm run -s build
)
if [[ -n "$(git status --porcelain -- console/dist)" ]]; then
  git status --short -- console/dist
  echo "console/dist differs from a build of console/src: run \`npm run build\` in console/ and commit console/dist" >&2
  exit 1
fi
echo "console/dist: identical to a fresh build"

log "console: its flows in headless Chromium against grantd over SQLite and PostgreSQL (Playwright)"
console/.venv/bin/python -m pytest -p no:cacheprovider -q console/tests

log "done"
printf 'ecosystem: all steps passed in %ss\n' "$((SECONDS - START))"
