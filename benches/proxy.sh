#!/usr/bin/env bash
# Sluice vs nginx vs HAProxy vs the Pingora floor vs direct-to-backend, under the same load.
#
# Builds release binaries and puts nginx, HAProxy (both configured to forward the same header
# fields Sluice does), nginx without those rules (nginx_bare), Sluice and the Pingora floor
# (proxy/examples/pingora_floor.rs: the smallest Pingora proxy, built on the same vendored
# Pingora) in front of one backend, each with upstream keep-alive sized to the client
# concurrency. Runs ROUNDS interleaved rounds of load against each target, then reports medians
# of req/s, p50/p99/p99.9 latency and each proxy's CPU per request and peak RSS, with Sluice's
# ratios to the others. Results go to benches/results/proxy[-scenario][-mode]-<UTC time>.json.
#
# Usage: benches/proxy.sh [--mode pinned|unpinned] [--threads 1] [--duration 10s] [--conns 64]
#                         [--rounds 5] [--path /ping] [--rate auto|N|0]
#                         [--baseline OLD_SLUICE_BINARY] [--scenario plain|browser|rules|gzip]
# --mode pinned (the default on a machine with 2 or more cores and --threads 1): each proxy on
#   core 1 alone (`taskset -c 1`), the load generator (wrk -t1) and a static nginx backend
#   (`return 200`, 1 worker) on core 0, so that a proxy's req/s is what one core of it does and
#   the backend costs little. Then a fixed-rate latency run: oha -q RATE on core 0 against each
#   target (RATE: half nginx's median req/s of the pinned rounds, or --rate N; --rate 0 skips
#   it), reporting p50/p99/p99.9 where a tail is not queueing behind a saturated core.
# --mode unpinned: everything shares the cores, oha as the load generator and backend-sample
#   (tokio, 2 workers) as the backend (the figures in docs/benchmarks.md before 2026-12-03).
# --threads N (unpinned only): Sluice threads = N, nginx N workers, HAProxy nbthread N, the
#   floor N threads: the scaling run is --mode unpinned --threads 2.
# --scenario rules: nginx and Sluice both apply a realistic rule set on /app/ (5 header rules,
#   security headers, a rewrite, a body limit) and only those two (and --baseline) are measured;
#   the path defaults to /app/ping. --scenario gzip: both gzip (level 1, nginx's default) a
#   10 KiB JSON body for a client sending Accept-Encoding: gzip; the path defaults to
#   /json/10240. Each reports sluice_over_nginx_rps and the CPU ratio for the same work.
# --scenario browser: the plain route and every target, but each request carries the ten fields
#   a browser sends (User-Agent, Accept, Accept-Language, Accept-Encoding, Cookie, Referer,
#   Sec-Fetch-Mode, Sec-Fetch-Site, Upgrade-Insecure-Requests, Cache-Control; wrk's bare request
#   has only Host): what parsing, storing and forwarding header fields costs each proxy.
# --baseline adds a second Sluice (target `baseline`, e.g. a build of the commit before a change)
# with the same config, measured in the same interleaved rounds, and its ratios to the floor.
# Installs nginx, haproxy and wrk from apt and oha with cargo when missing. Traffic stays on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s CONNS=64 ROUNDS=5 URLPATH="" THREADS=1 BASELINE="" SCENARIO=plain MODE="" RATE=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --path) URLPATH=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$MODE" ]; then
  if [ "$(nproc)" -ge 2 ] && [ "$THREADS" = 1 ]; then MODE=pinned; else MODE=unpinned; fi
fi
case "$MODE" in
  pinned) [ "$THREADS" = 1 ] || { echo "--mode pinned measures one thread per proxy; use --mode unpinned --threads $THREADS" >&2; exit 2; }
          [ "$(nproc)" -ge 2 ] || { echo "--mode pinned needs 2 cores" >&2; exit 2; } ;;
  unpinned) ;;
  *) echo "unknown mode $MODE (pinned, unpinned)" >&2; exit 2 ;;
esac
# Who runs where: in pinned mode the proxies on core 1, the backend and the load on core 0.
PROXY_CPU=() LOAD_CPU=()
if [ "$MODE" = pinned ]; then PROXY_CPU=(taskset -c 1) LOAD_CPU=(taskset -c 0); fi

# The request fields every load run sends (wrk and oha take the same -H arguments).
REQ_HEADERS=()
case "$SCENARIO" in
  plain) URLPATH=${URLPATH:-/ping} ;;
  rules) URLPATH=${URLPATH:-/app/ping} ;;
  gzip) URLPATH=${URLPATH:-/json/10240}; REQ_HEADERS=(-H "Accept-Encoding: gzip") ;;
  browser) URLPATH=${URLPATH:-/ping}
    REQ_HEADERS=(
      -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
      -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
      -H "Accept-Language: en-US,en;q=0.9"
      -H "Accept-Encoding: gzip, deflate, br"
      -H "Cookie: session=abc123; theme=dark"
      -H "Referer: https://example.com/"
      -H "Sec-Fetch-Mode: navigate"
      -H "Sec-Fetch-Site: same-origin"
      -H "Upgrade-Insecure-Requests: 1"
      -H "Cache-Control: max-age=0") ;;
  *) echo "unknown scenario $SCENARIO (plain, browser, rules, gzip)" >&2; exit 2 ;;
esac

scripts/install-deps.sh nginx haproxy wrk
command -v oha >/dev/null 2>&1 || cargo install oha --locked
cargo build --release --locked -p sluice -p backend-sample
cargo build --release --locked -p sluice --example pingora_floor

source benches/lib.sh

BACKEND=$(free_port); NGINX=$(free_port); NGINX_BARE=$(free_port); HAPROXY=$(free_port); SLUICE=$(free_port); FLOOR=$(free_port)
KEEPALIVE=$((CONNS * 2))

if [ "$MODE" = pinned ]; then
  # A static backend that costs little: nginx answering from its config. /echo shows the
  # forwarded fields the checks below compare; /json/10240 is backend-sample's body, saved.
  mkdir -p "$work/json"
  tmp_port=$(free_port)
  target/release/backend-sample --listen "127.0.0.1:$tmp_port" --id b1 2>/dev/null &
  tmp_pid=$!
  wait_port "$tmp_port"
  curl -sf "http://127.0.0.1:$tmp_port/json/10240" -o "$work/json/10240"
  kill "$tmp_pid"; wait "$tmp_pid" 2>/dev/null || true
  echo_fields=""
  for h in host x-forwarded-for x-forwarded-host x-forwarded-proto x-real-ip x-request-id x-env x-client-ip x-debug; do
    echo_fields+="${echo_fields:+,}\"$h\":\"\$http_${h//-/_}\""
  done
  static_backend_conf "$BACKEND" "    default_type text/plain;
    add_header X-Backend-Id b1;
    location = /echo { default_type application/json; return 200 '{\"path\":\"\$uri\",\"headers\":{$echo_fields}}'; }
    location /json/ { default_type application/json; alias $work/json/; }" >"$work/backend.conf"
  "${LOAD_CPU[@]}" nginx -c "$work/backend.conf" -g 'daemon off;' &
  pids+=($!); BACKEND_PID=$!
else
  target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>"$work/backend.log" &
  pids+=($!); BACKEND_PID=$!
fi

# nginx and HAProxy are configured as an operator fronting a service with them would, doing the
# work Sluice does on every request: keep Host, append X-Forwarded-For, set X-Real-IP,
# X-Forwarded-Proto and X-Forwarded-Host, pass or generate X-Request-Id and return it.
# A check before the load asserts the three forward the same fields. nginx_bare (no header
# rules) shows what that work costs nginx.
nginx_conf() { # nginx_conf PORT HEADERS(0|1)
  local rules=""
  if [ "$2" = 1 ]; then
    rules='
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Request-Id $sluice_request_id;
      add_header X-Request-Id $sluice_request_id always;'
  fi
  local scenario=""
  if [ "$2" = 1 ] && [ "$SCENARIO" = rules ]; then
    # The same rules as Sluice's route below. add_header in a location replaces the server's,
    # so the request id is added again.
    scenario="
    location /app/ {
      rewrite ^/app/(.*)\$ /\$1 break;
      client_max_body_size 1m;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";$rules
      proxy_set_header X-Env prod;
      proxy_set_header X-Client-Ip \$remote_addr;
      proxy_set_header X-Debug \"\";
      proxy_hide_header X-Backend-Id;
      add_header X-Served-By sluice always;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options SAMEORIGIN always;
      add_header Referrer-Policy strict-origin-when-cross-origin always;
    }"
  fi
  local gzip=""
  if [ "$2" = 1 ] && [ "$SCENARIO" = gzip ]; then
    gzip="
  gzip on;
  gzip_comp_level 1;
  gzip_min_length 1024;
  gzip_vary on;
  gzip_proxied any;
  gzip_types application/json;"
  fi
  cat <<NGX
worker_processes $THREADS;
pid $work/nginx-$1.pid;
error_log $work/nginx-$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive $KEEPALIVE; }
  map \$http_x_request_id \$sluice_request_id { default \$http_x_request_id; "" \$request_id; }$gzip
  server {
    listen 127.0.0.1:$1;$scenario
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";$rules
    }
  }
}
NGX
}
nginx_conf "$NGINX" 1 >"$work/nginx.conf"
"${PROXY_CPU[@]}" nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!); NGINX_PID=$!
nginx_conf "$NGINX_BARE" 0 >"$work/nginx-bare.conf"
"${PROXY_CPU[@]}" nginx -c "$work/nginx-bare.conf" -g 'daemon off;' &
pids+=($!); NGINX_BARE_PID=$!

cat >"$work/haproxy.cfg" <<HAP
global
  nbthread $THREADS
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid] unless { req.hdr(x-request-id) -m found }
  http-request set-var(txn.request_id) req.hdr(x-request-id)
  http-response set-header X-Request-Id %[var(txn.request_id)]
  default_backend be
backend be
  server b1 127.0.0.1:$BACKEND
HAP
"${PROXY_CPU[@]}" haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!); HAPROXY_PID=$!

cat >"$work/sluice.toml" <<SLC
[server]
listen = ["127.0.0.1:$SLUICE"]
threads = $THREADS
grace_period_seconds = 0
upstream_keepalive_pool_size = $KEEPALIVE
[admin]
enabled = false
[logging]
access_log = false
[upstreams.b]
backends = [{ addr = "127.0.0.1:$BACKEND" }]
[[routes]]
upstream = "b"
SLC
case "$SCENARIO" in
  rules) cat >>"$work/sluice.toml" <<'SLC'
[[routes]]
path_prefix = "/app"
upstream = "b"
rewrite = { pattern = "^/app/(.*)$", to = "/$1" }
max_body_bytes = 1048576
request_headers = { set = { "x-env" = "prod", "x-client-ip" = "{client_ip}" }, remove = ["x-debug"] }
response_headers = { add = { "x-served-by" = "sluice" }, remove = ["x-backend-id"] }
security_headers = "basic"
SLC
  ;;
  gzip) echo 'compression = { algorithms = ["gzip"], min_bytes = 1024, types = ["application/json"] }' >>"$work/sluice.toml" ;;
esac
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/sluice.toml" 2>"$work/sluice.log" &
pids+=($!); SLUICE_PID=$!
BASE_PORT=""
if [ -n "$BASELINE" ]; then
  BASE_PORT=$(free_port)
  sed "s/127.0.0.1:$SLUICE\"/127.0.0.1:$BASE_PORT\"/" "$work/sluice.toml" >"$work/baseline.toml"
  RUST_LOG=warn "${PROXY_CPU[@]}" "$BASELINE" --config "$work/baseline.toml" 2>"$work/baseline.log" &
  pids+=($!); BASE_PID=$!
fi

"${PROXY_CPU[@]}" target/release/examples/pingora_floor "127.0.0.1:$FLOOR" "127.0.0.1:$BACKEND" "$THREADS" "$KEEPALIVE" \
  2>"$work/floor.log" &
pids+=($!); FLOOR_PID=$!

for p in $BACKEND $NGINX $NGINX_BARE $HAPROXY $SLUICE $FLOOR $BASE_PORT; do wait_port "$p"; done

# The comparison is only fair if nginx, HAProxy and Sluice forward the same request: ask each
# to echo what the backend received, with and without a client X-Request-Id.
python3 - "$NGINX" "$HAPROXY" "$SLUICE" <<'PY'
import json, sys, urllib.request
FIELDS = ["host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
          "x-request-id"]
def echo(port, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/echo", headers=headers)
    with urllib.request.urlopen(req, timeout=5) as r:
        seen = json.load(r)["headers"]
        return {k: seen.get(k, "").replace(str(port), "PORT") for k in FIELDS}, r.headers.get("x-request-id")
for port in sys.argv[1:]:
    got, returned = echo(port, {"X-Request-Id": "bench-check", "X-Forwarded-For": "192.0.2.1"})
    want = {"host": "127.0.0.1:PORT", "x-forwarded-for": "192.0.2.1, 127.0.0.1",
            "x-forwarded-host": "127.0.0.1:PORT", "x-forwarded-proto": "http",
            "x-real-ip": "127.0.0.1", "x-request-id": "bench-check"}
    if got != want or returned != "bench-check":
        sys.exit(f"port {port} does not forward like Sluice: {got}, returned id {returned}")
    got, returned = echo(port, {})
    if not got["x-request-id"] or got["x-request-id"] != returned:
        sys.exit(f"port {port} does not generate and return a request id: {got}, {returned}")
print("nginx, HAProxy and Sluice forward the same fields")
PY

oha_json_flag="--output-format json"
oha --help 2>&1 | grep -q -- '--output-format' || oha_json_flag="--json"

declare -A PORT=([direct]=$BACKEND [nginx]=$NGINX [nginx_bare]=$NGINX_BARE [haproxy]=$HAPROXY [sluice]=$SLUICE [floor]=$FLOOR)
targets=(direct nginx nginx_bare haproxy sluice floor)
# Whose CPU time each round is charged to: the proxy's (nginx: its workers), or for direct the
# backend's. CPU per request is steadier than req/s on a shared machine.
workers() { # the children of an nginx master (its workers), comma-separated
  local w=""
  for _ in $(seq 1 100); do
    w=$(pgrep -P "$1" | paste -sd, || true)
    [ -n "$w" ] && break
    sleep 0.05
  done
  echo "${w:-$1}"
}
NGINX_WORKER=$(workers "$NGINX_PID")
NGINX_BARE_WORKER=$(workers "$NGINX_BARE_PID")
BACKEND_CPU=$BACKEND_PID
[ "$MODE" = pinned ] && BACKEND_CPU=$(workers "$BACKEND_PID")
declare -A CPU_PID=([direct]=$BACKEND_CPU [nginx]=$NGINX_WORKER [nginx_bare]=$NGINX_BARE_WORKER [haproxy]=$HAPROXY_PID [sluice]=$SLUICE_PID [floor]=$FLOOR_PID)
if [ "$SCENARIO" != plain ] && [ "$SCENARIO" != browser ]; then
  # Only nginx does the same work as Sluice here.
  targets=(nginx sluice)
  # Both answer the scenario alike: checked before any load.
  python3 - "$SCENARIO" "$NGINX" "$SLUICE" <<'PY'
import json, sys, urllib.request
scenario, ports = sys.argv[1], sys.argv[2:]
for port in ports:
    if scenario == "gzip":
        req = urllib.request.Request(f"http://127.0.0.1:{port}/json/10240",
                                     headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
            if r.headers.get("content-encoding") != "gzip" or "Accept-Encoding" not in (r.headers.get("vary") or ""):
                sys.exit(f"port {port} does not gzip with Vary: {dict(r.headers)}")
            import gzip
            if len(gzip.decompress(body)) != 10240:
                sys.exit(f"port {port}: the gzip body does not decode to 10240 bytes")
    else:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/app/echo", headers={"X-Debug": "1"})
        with urllib.request.urlopen(req, timeout=5) as r:
            seen = json.load(r)
            h = r.headers
            want = {"x-served-by": "sluice", "x-content-type-options": "nosniff",
                    "x-frame-options": "SAMEORIGIN", "referrer-policy": "strict-origin-when-cross-origin"}
            got = {k: h.get(k) for k in want}
            if got != want or h.get("x-backend-id"):
                sys.exit(f"port {port} response fields differ: {dict(h)}")
            fwd = seen["headers"]
            if seen["path"] != "/echo" or fwd.get("x-env") != "prod" or fwd.get("x-client-ip") != "127.0.0.1" or fwd.get("x-debug"):
                sys.exit(f"port {port} request differs: {seen}")
print(f"nginx and Sluice apply the {scenario} scenario alike")
PY
fi
if [ -n "$BASELINE" ]; then
  targets+=(baseline); PORT[baseline]=$BASE_PORT; CPU_PID[baseline]=$BASE_PID
fi
# wrk (pinned mode: a load generator that leaves core 0 room for the backend) writes its summary
# as JSON through this script.
write_wrk_report
load() { # load TARGET OUT_PREFIX DURATION: one run of the throughput load, CPU counted
  local t=$1 out=$2 d=$3 before
  before=$(cpu_ticks "${CPU_PID[$t]}")
  if [ "$MODE" = pinned ]; then
    WRK_OUT="$out.wrk.json" "${LOAD_CPU[@]}" wrk -t1 -c "$CONNS" -d "$d" -s "$work/report.lua" \
      "${REQ_HEADERS[@]}" "http://127.0.0.1:${PORT[$t]}$URLPATH" >/dev/null
  else
    oha -z "$d" -c "$CONNS" --no-tui $oha_json_flag "${REQ_HEADERS[@]}" \
      "http://127.0.0.1:${PORT[$t]}$URLPATH" >"$out.oha.json"
  fi
  echo $(($(cpu_ticks "${CPU_PID[$t]}") - before)) >"$out.cpu"
}
echo "warming up"
for t in "${targets[@]}"; do load "$t" "$work/warm-$t" 2s; done
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    echo "round $r/$ROUNDS: $t"
    load "$t" "$work/$t-$r" "$DURATION"
  done
done

# The fixed-rate latency run (pinned mode): every target at the same request rate, about half
# what nginx sustains on its core, so that the tails are the proxy's, not a queue's.
LAT_RATE=0
if [ "$MODE" = pinned ] && [ "$RATE" != 0 ]; then
  if [ "$RATE" = auto ]; then
    LAT_RATE=$(python3 - "$work" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rps = [json.load(open(f"{work}/nginx-{r}.wrk.json")) for r in range(1, rounds + 1)]
print(int(statistics.median(d["requests"] / (d["duration_us"] / 1e6) for d in rps) / 2))
PY
)
  else
    LAT_RATE=$RATE
  fi
  for r in $(seq 1 "$ROUNDS"); do
    for t in "${targets[@]}"; do
      [ "$t" = direct ] && continue
      echo "latency round $r/$ROUNDS at $LAT_RATE req/s: $t"
      before=$(cpu_ticks "${CPU_PID[$t]}")
      "${LOAD_CPU[@]}" oha -z "$DURATION" -c "$CONNS" -q "$LAT_RATE" --latency-correction --no-tui \
        $oha_json_flag "${REQ_HEADERS[@]}" "http://127.0.0.1:${PORT[$t]}$URLPATH" >"$work/lat-$t-$r.oha.json"
      echo $(($(cpu_ticks "${CPU_PID[$t]}") - before)) >"$work/lat-$t-$r.cpu"
    done
  done
fi

# nginx's workers are the children of its master; report the sum of the workers' peaks.
hwm() { local t=0 p; for p in ${1//,/ }; do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix=""; [ "$SCENARIO" = plain ] || suffix="-$SCENARIO"
suffix+="-$MODE"; [ "$THREADS" = 1 ] || suffix+="-threads$THREADS"
out="benches/results/proxy$suffix-$stamp.json"
python3 - "$work" "$ROUNDS" "$out" "$DURATION" "$CONNS" "$URLPATH" "$SCENARIO" \
  "$(hwm "$NGINX_WORKER")" "$(hwm "$NGINX_BARE_WORKER")" "$(hwm "$HAPROXY_PID")" "$(hwm "$SLUICE_PID")" "$(hwm "$FLOOR_PID")" \
  "$(getconf CLK_TCK)" "${BASE_PID:+$(hwm "$BASE_PID")}" "$MODE" "$THREADS" "$LAT_RATE" <<'PY'
import json, statistics, sys, platform, os
work, rounds, out, duration, conns, path, scenario, rss_nginx, rss_nginx_bare, rss_haproxy, rss_sluice, rss_floor, tck, rss_base, mode, threads, lat_rate = sys.argv[1:]
threads, lat_rate = int(threads), int(lat_rate)
tck = int(tck)
rounds = int(rounds)
rss = {"direct": None, "nginx": int(rss_nginx), "nginx_bare": int(rss_nginx_bare), "haproxy": int(rss_haproxy), "sluice": int(rss_sluice),
       "floor": int(rss_floor)}
targets = ["direct", "nginx", "nginx_bare", "haproxy", "sluice", "floor"]
if scenario not in ("plain", "browser"):
    targets = ["nginx", "sluice"]
if rss_base:
    rss["baseline"] = int(rss_base)
    targets.append("baseline")
def one_run(prefix):
    """One load run, oha's or wrk's, as req/s, latency percentiles (ms) and CPU per request."""
    ticks = int(open(f"{prefix}.cpu").read())
    if os.path.exists(f"{prefix}.wrk.json"):
        d = json.load(open(f"{prefix}.wrk.json"))
        served = d["requests"]
        run = {"rps": served / (d["duration_us"] / 1e6), "p50_ms": d["p50_us"] / 1000,
               "p99_ms": d["p99_us"] / 1000, "p999_ms": d["p999_us"] / 1000,
               "non_200": d["non2xx"], "errors": d["errors"]}
    else:
        d = json.load(open(f"{prefix}.oha.json"))
        s = d["summary"]
        lat = d.get("latencyPercentiles") or d.get("latency_percentiles") or {}
        codes = d.get("statusCodeDistribution", {})
        served = sum(codes.values())
        run = {"rps": s["requestsPerSec"], "p50_ms": (lat.get("p50") or 0) * 1000,
               "p99_ms": (lat.get("p99") or 0) * 1000,
               "p999_ms": (lat.get("p99.9") or 0) * 1000,
               "non_200": sum(v for k, v in codes.items() if k != "200"),
               # oha cuts the requests still in flight when -z expires; not proxy errors.
               "errors": sum(v for k, v in d.get("errorDistribution", {}).items()
                             if k != "aborted due to deadline")}
    # the proxy's (for direct: the backend's) user+system CPU per answered request
    run["cpu_us_per_req"] = ticks / tck / max(served, 1) * 1e6
    return run

res = {}
for t in targets:
    runs = []
    for r in range(1, rounds + 1):
        runs.append(one_run(f"{work}/{t}-{r}"))
    med = lambda k, rs=runs: statistics.median(x[k] for x in rs)
    res[t] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
              "p999_ms": med("p999_ms"), "cpu_us_per_req": med("cpu_us_per_req"),
              "peak_rss_kib": rss[t], "non_200": sum(x["non_200"] for x in runs),
              "errors": sum(x["errors"] for x in runs), "runs": runs}
    if lat_rate and t != "direct":
        lruns = [one_run(f"{work}/lat-{t}-{r}") for r in range(1, rounds + 1)]
        res[t]["fixed_rate"] = {"rate": lat_rate, "rps": med("rps", lruns),
                                "p50_ms": med("p50_ms", lruns), "p99_ms": med("p99_ms", lruns),
                                "p999_ms": med("p999_ms", lruns),
                                "cpu_us_per_req": med("cpu_us_per_req", lruns),
                                "errors": sum(x["errors"] + x["non_200"] for x in lruns),
                                "runs": lruns}
def ratio(a, b, key):
    return res[a][key] / res[b][key] if a in res and b in res and res[b][key] else None
ratios = {
    "sluice_over_nginx_rps": ratio("sluice", "nginx", "rps"),
    "sluice_over_nginx_bare_rps": ratio("sluice", "nginx_bare", "rps"),
    "sluice_p99_over_nginx_bare_p99": ratio("sluice", "nginx_bare", "p99_ms"),
    "sluice_over_haproxy_rps": ratio("sluice", "haproxy", "rps"),
    "sluice_over_direct_rps": ratio("sluice", "direct", "rps"),
    "sluice_p99_over_nginx_p99": ratio("sluice", "nginx", "p99_ms"),
    "sluice_over_pingora_floor_rps": ratio("sluice", "floor", "rps"),
    "sluice_cpu_over_nginx_cpu": ratio("sluice", "nginx", "cpu_us_per_req"),
    "sluice_cpu_over_pingora_floor_cpu": ratio("sluice", "floor", "cpu_us_per_req"),
    "sluice_cpu_over_haproxy_cpu": ratio("sluice", "haproxy", "cpu_us_per_req"),
    "sluice_p99_over_pingora_floor_p99": ratio("sluice", "floor", "p99_ms"),
}
def fixed(a, b, key):
    fa, fb = res.get(a, {}).get("fixed_rate"), res.get(b, {}).get("fixed_rate")
    return fa[key] / fb[key] if fa and fb and fb[key] else None
for other in ("nginx", "haproxy", "floor"):
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        ratios[f"fixed_rate_sluice_{key[:-3]}_over_{other}"] = fixed("sluice", other, key)
ratios = {k: v for k, v in ratios.items() if v is not None}
if "baseline" in res:
    # The scenario runs measure no floor: only the ratios whose targets ran.
    extra = {
        "baseline_over_pingora_floor_rps": ratio("baseline", "floor", "rps"),
        "baseline_cpu_over_pingora_floor_cpu": ratio("baseline", "floor", "cpu_us_per_req"),
        "baseline_over_nginx_rps": ratio("baseline", "nginx", "rps"),
        "sluice_over_baseline_rps": ratio("sluice", "baseline", "rps"),
        "sluice_cpu_over_baseline_cpu": ratio("sluice", "baseline", "cpu_us_per_req"),
    }
    ratios.update({k: v for k, v in extra.items() if v is not None})
doc = {"scenario": scenario, "mode": mode,
       "load": {"tool": "wrk -t1 (core 0)" if mode == "pinned" else "oha",
                "duration": duration, "connections": int(conns), "path": path,
                "rounds": rounds, "statistic": "median",
                "fixed_rate": f"oha -q {lat_rate} --latency-correction (core 0)" if lat_rate else None},
       "placement": "each proxy alone on core 1; load and static nginx backend on core 0"
                    if mode == "pinned" else "everything shares the cores; backend-sample",
       "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "equivalent_config": "nginx and haproxy forward Host, X-Forwarded-For/-Proto/-Host, "
                             "X-Real-IP and X-Request-Id like Sluice; nginx_bare has no header rules",
       "threads": {"nginx": f"{threads} workers", "nginx_bare": f"{threads} workers",
                   "haproxy": f"nbthread {threads}", "sluice": threads, "floor": threads},
       "results": {k: {kk: vv for kk, vv in v.items()} for k, v in res.items()},
       "ratios": ratios}
json.dump(doc, open(out, "w"), indent=2)
print(f"\n{mode}, threads {threads}")
print(f"| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU us/req | peak RSS MiB | errors+non-200 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t, v in res.items():
    r = "-" if v["peak_rss_kib"] is None else f"{v['peak_rss_kib']/1024:.1f}"
    print(f"| {t} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['p999_ms']:.2f} | {v['cpu_us_per_req']:.1f} | {r} | {v['errors']+v['non_200']} |")
if lat_rate:
    print(f"\nfixed rate {lat_rate} req/s (oha -q, latency corrected)")
    print("| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU us/req | errors+non-200 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t, v in res.items():
        f = v.get("fixed_rate")
        if f:
            print(f"| {t} | {f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['p999_ms']:.2f} | {f['cpu_us_per_req']:.1f} | {f['errors']} |")
print()
for k, v in ratios.items():
    print(f"{k}: {v:.2f}")
print(f"\nwritten to {out}")
bad = {t: v["errors"] + v["non_200"] + (v.get("fixed_rate") or {}).get("errors", 0)
       for t, v in res.items()
       if v["errors"] + v["non_200"] + (v.get("fixed_rate") or {}).get("errors", 0)}
if bad:
    sys.exit(f"INVALID RUN: failed or non-200 responses {bad}; these numbers measure an error path")
PY
