#!/usr/bin/env bash
# The demo: builds release binaries, starts three backend-sample instances (127.0.0.1:9001-9003)
# and Sluice in front of them with conf/sluice.toml (embedded defaults: Sluice needs no Redis),
# prints what to try, and stops everything on Ctrl-C. When redis-server is installed, it also
# starts one on 127.0.0.1:6390 so that the backends' /ws/broadcast reaches clients on all three.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null 2>&1 || scripts/install-deps.sh

cargo build --release --locked -p sluice -p backend-sample
bin=target/release

redis_args=()
if command -v redis-server >/dev/null 2>&1; then ports="8080 8443 9901 9001 9002 9003 6390"; else ports="8080 8443 9901 9001 9002 9003"; fi
for port in $ports; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; stop what is listening there first" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if command -v redis-server >/dev/null 2>&1; then
  redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/6390) 2>/dev/null && break; sleep 0.05; done
  redis_args=(--redis redis://127.0.0.1:6390/)
fi
for i in 1 2 3; do
  "$bin/backend-sample" --listen "127.0.0.1:900$i" --id "b$i" "${redis_args[@]}" &
  pids+=($!)
done
RUST_LOG=${RUST_LOG:-info} "$bin/sluice" --config conf/sluice.toml &
pids+=($!)

# Wait (up to 30 s) until Sluice accepts connections.
for _ in $(seq 1 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then ready=1; break; fi
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then echo "demo: sluice exited" >&2; exit 1; fi
  sleep 0.1
done
[ "${ready:-}" = 1 ] || { echo "demo: sluice did not start listening" >&2; exit 1; }

cat <<'MSG'

Sluice is running in front of backends b1, b2, b3 (conf/sluice.toml). Try:

  curl -i http://127.0.0.1:8080/hello          # weighted 5:1:1 -> watch x-backend-id
  for i in $(seq 7); do curl -s -o /dev/null -D - http://127.0.0.1:8080/ | grep -i x-backend-id; done
  curl -i http://127.0.0.1:8080/delay/200      # least_conn pool
  for i in 1 2 3; do curl -s http://127.0.0.1:8080/ws/echo | grep -o '"id":"b."'; done   # ip_hash: same backend every time
  curl -k --http2 -i https://localhost:8443/   # TLS, HTTP/2 by ALPN (self-signed demo cert)
  curl http://127.0.0.1:9001/control/stats     # what b1 served
  curl -X POST 'http://127.0.0.1:9002/control/health?status=503'   # b2 leaves rotation (see log)
  curl -X POST 'http://127.0.0.1:9002/control/health?status=200'   # ... and returns, slow-started
  curl -i http://127.0.0.1:8080/cache/30       # twice: X-Cache MISS, then HIT (Age grows)

Admin API on 127.0.0.1:9901 (docs/operations.md):
  curl http://127.0.0.1:9901/status            # pools, backends, health, in-flight
  curl http://127.0.0.1:9901/metrics           # Prometheus
  curl http://127.0.0.1:9901/cache/stats
  edit conf/sluice.toml (e.g. a weight) and save: it reloads live (or kill -HUP the sluice pid)

WebSocket (any client, e.g. `cargo install websocat`):
  websocat ws://127.0.0.1:8080/ws               # echo; the first message names the backend
  websocat ws://127.0.0.1:8080/ws/broadcast     # open two: what one sends, all receive
                                                # (across backends when redis-server is installed)
  oha -z 10s -c 50 http://127.0.0.1:8080/ping  # load test (cargo install oha)

Ctrl-C stops everything.
MSG
wait
