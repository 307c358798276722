#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable run to run (unlike time on a
# shared machine), so it is the before/after measure of one change to the request path.
#
# Usage: benches/callgrind.sh [--seconds 8] [--conns 16] [--path /ping] [--keep DIR]
#                             [--route FILE] [--header 'Name: value'] [NAME=]SLUICE_BINARY...
#   --route FILE appends FILE's lines to the one [[routes]] table (rules to measure, e.g. the
#   rule set of `benches/proxy.sh --scenario rules`); --header adds a request field to wrk's.
#   --keep DIR copies each dump to DIR/NAME.N.callgrind (for callgrind_annotate).
#   --redis starts a redis-server and adds a [redis] section (the cache's and rate limits' store;
#   e.g. `--redis --route <(echo 'cache = "warm"') --path /cache/600` counts a Redis cache hit).
#   --h2 loads HTTP/2 over TLS instead (a [[server.tls]] listener with conf/tls's demo certificate,
#   h2load with one stream per connection; Sluice only, not the floor): the cost of the HTTP/2
#   codec and TLS per request.
#   --cache-sim also simulates the caches (valgrind's --cache-sim=yes: first-level instruction
#   and data misses, last-level misses) and prints misses per request beside the instructions:
#   repeatable like the instruction count, for code layout and working-set changes that the
#   clock cannot tell apart on this VM (which has no hardware counters).
#   --strace counts system calls per request instead (the binary runs natively, `strace -c -f`
#   attached for the measured load): calls and failed calls by name, repeatable from run to run
#   (e.g. the EAGAIN read per request found in session 19).
#   e.g. benches/callgrind.sh before=/tmp/old/target/release/sluice after=target/release/sluice
#   A binary named pingora_floor (target/release/examples/pingora_floor) is run as the floor, so
#   `sluice=target/release/sluice floor=target/release/examples/pingora_floor` splits what Sluice
#   adds per request from what Pingora costs (with --keep, diff the two dumps' self costs).
# Each binary runs under valgrind with one worker thread in front of a release backend-sample;
# after a warm-up the counters are zeroed, wrk sends load for SECONDS, and the dump's total is
# divided by the requests wrk completed. Binaries are measured one after the other, twice each,
# interleaved. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_LOAD=8 CONNS=16 URLPATH=/ping KEEP="" ROUTE_EXTRA="" WRK_HEADERS=() REDIS_ON= H2= STRACE= CACHE_SIM=
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --path) URLPATH=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --route) ROUTE_EXTRA=$(cat "$2"); shift 2 ;;
    --header) WRK_HEADERS+=(-H "$2"); shift 2 ;;
    --redis) REDIS_ON=1; shift ;;
    --h2) H2=1; shift ;;
    --strace) STRACE=1; shift ;;
    --cache-sim) CACHE_SIM=--cache-sim=yes; shift ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || bins=("target/release/sluice")

scripts/install-deps.sh wrk valgrind
[ -z "$STRACE" ] || scripts/install-deps.sh strace
[ -z "$H2" ] || command -v h2load >/dev/null || scripts/install-deps.sh nghttp2-client
[ -x target/release/backend-sample ] || cargo build --release --locked -p backend-sample
source benches/lib.sh

BACKEND=$(free_port)
target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>"$work/backend.log" &
pids+=($!)
wait_port "$BACKEND"
REDIS_TOML=""
if [ -n "$REDIS_ON" ]; then
  scripts/install-deps.sh redis-server
  REDIS=$(free_port)
  redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_port "$REDIS"
  # Under valgrind a Redis call takes far longer than the cache's 20 ms default, and one that
  # times out is a miss: the count would mix hits and misses.
  REDIS_TOML=$(printf '[redis]\nurl = "redis://127.0.0.1:%s/"\n[cache]\ncommand_timeout_ms = 5000' "$REDIS")
fi

# load SECONDS PORT -> prints the requests answered (wrk over HTTP/1.1, or h2load with --h2)
load() {
  if [ -n "$H2" ]; then
    h2load -c"$CONNS" -m1 -D"$1" "${WRK_HEADERS[@]}" "https://127.0.0.1:$TLS_PORT$URLPATH" |
      awk '/^requests:/ {print $8}'
  else
    wrk -t1 -c"$CONNS" -d"$1s" "${WRK_HEADERS[@]}" "http://127.0.0.1:$2$URLPATH" |
      awk '/requests in/ {print $1}'
  fi
}

measure() { # measure NAME BINARY -> prints instructions per request
  local name=$1 bin=$2 port admin out tls_toml=""
  port=$(free_port); admin=$(free_port); out="$work/callgrind.$name.$RANDOM"
  if [ -n "$H2" ]; then
    TLS_PORT=$(free_port)
    tls_toml=$(printf '[[server.tls]]\nlisten = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"' \
      "$TLS_PORT" "$PWD/conf/tls/cert.pem" "$PWD/conf/tls/key.pem")
  fi
  cat >"$work/sluice.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
grace_period_seconds = 0
upstream_keepalive_pool_size = $((CONNS * 2))
upgrade_sock = "$work/upgrade.sock"
$tls_toml
[admin]
listen = "127.0.0.1:$admin"
[logging]
access_log = false
$REDIS_TOML
[upstreams.api]
backends = [{ addr = "127.0.0.1:$BACKEND" }]
[[routes]]
upstream = "api"
$ROUTE_EXTRA
TOML
  # The Pingora floor (proxy/examples/pingora_floor.rs) takes its listen and upstream addresses,
  # thread count and keep-alive pool size as arguments: the same settings as the config above.
  local args=(--config "$work/sluice.toml")
  [ "$(basename "$bin")" = pingora_floor ] && args=("127.0.0.1:$port" "127.0.0.1:$BACKEND" 1 $((CONNS * 2)))
  if [ -n "$STRACE" ]; then
    RUST_LOG=error "$bin" "${args[@]}" 2>"$work/$name.log" &
  else
    RUST_LOG=error valgrind --tool=callgrind ${CACHE_SIM:+"$CACHE_SIM"} --callgrind-out-file="$out" \
      "$bin" "${args[@]}" 2>"$work/valgrind.$name.log" &
  fi
  local vpid=$!
  # Under valgrind on a busy machine start-up can take longer than wait_port's 10 s.
  for _ in 1 2 3 4 5 6; do wait_port "$port" 2>/dev/null && break; done
  wait_port "$port"
  [ -z "$H2" ] || wait_port "$TLS_PORT"
  load 3 "$port" >/dev/null
  if [ -n "$STRACE" ]; then
    strace -c -f -q -p "$vpid" -o "$out.strace" 2>/dev/null &
    local spid=$!
    # Attached when the process shows a tracer.
    for _ in $(seq 1 200); do
      [ "$(awk '/^TracerPid:/ {print $2}' "/proc/$vpid/status")" != 0 ] && break
      sleep 0.05
    done
    local reqs
    reqs=$(load "$SECONDS_LOAD" "$port")
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    kill -INT "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    # strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
    awk -v name="$name" -v reqs="$reqs" '
      /^-/ || /^%/ || /total$/ || NF < 5 { next }
      { calls = $4; errs = (NF == 6) ? $5 : 0; sc = $NF; total += calls
        if (calls / reqs < 0.01) next
        line = line sprintf(" %s %.2f", sc, calls / reqs)
        if (errs / reqs >= 0.01) line = line sprintf(" (%.2f failed)", errs / reqs) }
      END { printf "%-12s %8d requests  %6.2f syscalls/request:%s\n", name, reqs, total / reqs, line }
    ' "$out.strace"
    return
  fi
  callgrind_control -z "$vpid" >/dev/null
  local reqs
  reqs=$(load "$SECONDS_LOAD" "$port")
  callgrind_control -d "$vpid" >/dev/null
  kill -INT "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  # The dump made right after the load (`$out.1`), not the one at exit (shutdown work). Its
  # `events:` line names the columns of `summary:` (Ir first; with --cache-sim also I1mr,
  # D1mr, D1mw, ILmr, DLmr, DLmw).
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; cp "$out".1 "$KEEP/$name.$round.callgrind"; fi
  awk -v name="$name" -v reqs="$reqs" '
    /^events:/ { for (i = 2; i <= NF; i++) ev[i] = $i }
    /^summary:/ { for (i = 2; i <= NF; i++) sum[i] += $i; n = NF }
    END {
      line = sprintf("%-12s %8d requests  %8.0f instructions/request", name, reqs, sum[2] / reqs)
      for (i = 3; i <= n; i++) if (ev[i] ~ /mr$|mw$/) line = line sprintf("  %s %.1f", ev[i], sum[i] / reqs)
      print line
    }' "$out".1
}

for round in 1 2; do
  for spec in "${bins[@]}"; do
    name=${spec%%=*}; bin=${spec#*=}
    [ "$name" = "$spec" ] && name=$(basename "$(dirname "$(dirname "$bin")")")
    measure "$name" "$bin"
  done
done
