#!/usr/bin/env bash
# HTTP caching conformance: runs the public cache test suite (http-cache-tests, the suite
# behind cache-tests.fyi, pinned from the npm registry) through Sluice with the embedded store
# and with Redis, and compares the counts of required tests passed and failed with the
# published results of nginx, Varnish, Apache httpd, Squid, Traffic Server and Fastly that ship
# with the same suite version.
#
# Usage: benches/cache_conformance.sh [--store memory|redis|both] [--ttl-mode origin|override]
#                                     [--id TEST_ID] [--suite DIR]
#   --id runs one test and prints what the client and the origin saw (for debugging a failure).
#   SLUICE_BIN=path runs that binary instead of building target/release/sluice (to compare
#     versions in the same conditions).
#   --suite uses a checkout of github.com/http-tests/cache-tests (after `npm install` in it)
#     instead of the npm package: the repository has the current tests and the published
#     results of cache-tests.fyi (issue 14's figures come from commit b55b8bd); the npm
#     package (0.4.5, the newest there) is an older test set with 2020-2021 results.
# Installs Node's suite with npm and redis-server with apt when missing. Traffic stays on
# 127.0.0.1. Results go to benches/results/cache-conformance-<UTC time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

STORES=both TTL_MODE=origin TEST_ID="" SUITE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --store) STORES=$2; shift 2 ;;
    --ttl-mode) TTL_MODE=$2; shift 2 ;;
    --id) TEST_ID=$2; shift 2 ;;
    --suite) SUITE=$(cd "$2" && pwd); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$STORES" in both) stores=(memory redis) ;; memory|redis) stores=("$STORES") ;; *) echo "--store memory|redis|both" >&2; exit 2 ;; esac

if [ -z "$SUITE" ]; then
  SUITE_VERSION=0.4.5
  SUITE_DIR=target/cache-tests/$SUITE_VERSION
  if [ ! -f "$SUITE_DIR/node_modules/http-cache-tests/package.json" ]; then
    mkdir -p "$SUITE_DIR"
    npm install --no-audit --no-fund --silent --prefix "$SUITE_DIR" "http-cache-tests@$SUITE_VERSION" >/dev/null
  fi
  SUITE=$(cd "$SUITE_DIR/node_modules/http-cache-tests" && pwd)
fi
# The repository keeps the engine under test-engine/; the npm package at its top.
ENGINE=.
[ -d "$SUITE/test-engine" ] && ENGINE=test-engine

scripts/install-deps.sh
SLUICE_BIN=${SLUICE_BIN:-}
if [ -z "$SLUICE_BIN" ]; then
  cargo build --release --locked -p sluice
  SLUICE_BIN=target/release/sluice
fi

source benches/lib.sh

ORIGIN=$(free_port)
(cd "$SUITE" && npm_config_port=$ORIGIN npm_config_protocol=http npm_config_pidfile="$work/origin.pid" \
  exec node "$ENGINE/server/server.mjs" >"$work/origin.log" 2>&1) &
pids+=($!)
wait_port "$ORIGIN"

run_store() { # run_store memory|redis -> results JSON path
  local store=$1 port redis_conf=""
  port=$(free_port)
  if [ "$store" = redis ]; then
    local rport
    rport=$(free_port)
    redis-server --port "$rport" --save "" --appendonly no >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$rport"
    redis_conf="[redis]
url = \"redis://127.0.0.1:$rport\""
  fi
  cat >"$work/sluice-$store.toml" <<SLC
[server]
listen = ["127.0.0.1:$port"]
threads = 2
grace_period_seconds = 0
[admin]
enabled = false
[logging]
access_log = false
$redis_conf
[cache]
ttl_mode = "$TTL_MODE"
[upstreams.origin]
backends = [{ addr = "127.0.0.1:$ORIGIN" }]
retries = 0
[[routes]]
upstream = "origin"
cache = "warm"
SLC
  RUST_LOG=warn "$SLUICE_BIN" --config "$work/sluice-$store.toml" 2>"$work/sluice-$store.log" &
  pids+=($!)
  wait_port "$port"
  (cd "$SUITE" && npm_config_base="http://127.0.0.1:$port" npm_config_id="$TEST_ID" npm_package_config_id="" \
    node --no-warnings "$ENGINE/cli.mjs") >"$work/results-$store.json"
}

if [ -n "$TEST_ID" ]; then
  for s in "${stores[@]}"; do
    echo "== $s"
    run_store "$s"
    cat "$work/results-$s.json"
  done
  exit 0
fi

for s in "${stores[@]}"; do
  echo "running the suite through Sluice ($s store, ttl_mode = $TTL_MODE)" >&2
  run_store "$s"
  # Anything Sluice logged at warn or above during the run (a failed exchange shows here).
  if grep -qE ' (WARN|ERROR) ' "$work/sluice-$s.log"; then
    echo "Sluice ($s) logged:" >&2
    grep -E ' (WARN|ERROR) ' "$work/sluice-$s.log" | sed 's/^/  /' | head -20 >&2
  fi
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benches/results/cache-conformance-$stamp.json"
node --no-warnings benches/cache_conformance_summary.mjs "$SUITE" "$out" "$TTL_MODE" \
  $(for s in "${stores[@]}"; do echo "sluice-$s=$work/results-$s.json"; done)
