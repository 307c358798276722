#!/usr/bin/env bash
# Sluice vs nginx vs HAProxy vs direct-to-backend, under the same oha load.
#
# Builds release binaries, starts one backend-sample, and puts nginx (1 worker), HAProxy (1 thread),
# both configured to forward the same header fields Sluice does, nginx without those rules
# (nginx_bare), Sluice (1 thread) and the Pingora floor (proxy/examples/pingora_floor.rs: the smallest Pingora
# proxy, built on the same vendored Pingora, 1 thread) in front of it, each with upstream
# keep-alive sized to the client concurrency. Runs ROUNDS interleaved rounds of `oha -z DURATION -c CONNS` against each target,
# then reports medians of req/s, p50 and p99, each proxy's peak RSS, and the Sluice/nginx and
# Sluice/HAProxy ratios. Results go to benches/results/proxy-<UTC time>.json.
#
# Usage: benches/proxy.sh [--duration 10s] [--conns 64] [--rounds 5] [--path /ping]
#                         [--baseline OLD_SLUICE_BINARY] [--scenario plain|rules|gzip]
# --scenario rules: nginx and Sluice both apply a realistic rule set on /app/ (5 header rules,
#   security headers, a rewrite, a body limit) and only those two (and --baseline) are measured;
#   the path defaults to /app/ping. --scenario gzip: both gzip (level 1, nginx's default) a
#   10 KiB JSON body for a client sending Accept-Encoding: gzip; the path defaults to
#   /json/10240. Each reports sluice_over_nginx_rps and the CPU ratio for the same work.
# --baseline adds a second Sluice (target `baseline`, e.g. a build of the commit before a change)
# with the same config, measured in the same interleaved rounds, and its ratios to the floor.
# Installs nginx and haproxy from apt and oha with cargo when missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s CONNS=64 ROUNDS=5 URLPATH="" THREADS=1 BASELINE="" SCENARIO=plain
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --path) URLPATH=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

OHA_HEADERS=()
case "$SCENARIO" in
  plain) URLPATH=${URLPATH:-/ping} ;;
  rules) URLPATH=${URLPATH:-/app/ping} ;;
  gzip) URLPATH=${URLPATH:-/json/10240}; OHA_HEADERS=(-H "Accept-Encoding: gzip") ;;
  *) echo "unknown scenario $SCENARIO (plain, rules, gzip)" >&2; exit 2 ;;
esac

scripts/install-deps.sh nginx haproxy
command -v oha >/dev/null 2>&1 || cargo install oha --locked
cargo build --release --locked -p sluice -p backend-sample
cargo build --release --locked -p sluice --example pingora_floor

source benches/lib.sh

BACKEND=$(free_port); NGINX=$(free_port); NGINX_BARE=$(free_port); HAPROXY=$(free_port); SLUICE=$(free_port); FLOOR=$(free_port)
KEEPALIVE=$((CONNS * 2))

target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>"$work/backend.log" &
pids+=($!)

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
worker_processes 1;
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
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!); NGINX_PID=$!
nginx_conf "$NGINX_BARE" 0 >"$work/nginx-bare.conf"
nginx -c "$work/nginx-bare.conf" -g 'daemon off;' &
pids+=($!); NGINX_BARE_PID=$!

cat >"$work/haproxy.cfg" <<HAP
global
  nbthread 1
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
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
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
RUST_LOG=warn target/release/sluice --config "$work/sluice.toml" 2>"$work/sluice.log" &
pids+=($!); SLUICE_PID=$!
BASE_PORT=""
if [ -n "$BASELINE" ]; then
  BASE_PORT=$(free_port)
  sed "s/127.0.0.1:$SLUICE\"/127.0.0.1:$BASE_PORT\"/" "$work/sluice.toml" >"$work/baseline.toml"
  RUST_LOG=warn "$BASELINE" --config "$work/baseline.toml" 2>"$work/baseline.log" &
  pids+=($!); BASE_PID=$!
fi

target/release/examples/pingora_floor "127.0.0.1:$FLOOR" "127.0.0.1:$BACKEND" "$THREADS" "$KEEPALIVE" \
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
# Whose CPU time each round is charged to: the proxy's (nginx: its worker), or for direct the
# backend's. CPU per request is steadier than req/s on a shared machine.
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || echo "$NGINX_PID")
NGINX_BARE_WORKER=$(pgrep -P "$NGINX_BARE_PID" | head -1 || echo "$NGINX_BARE_PID")
declare -A CPU_PID=([direct]=${pids[0]} [nginx]=$NGINX_WORKER [nginx_bare]=$NGINX_BARE_WORKER [haproxy]=$HAPROXY_PID [sluice]=$SLUICE_PID [floor]=$FLOOR_PID)
if [ "$SCENARIO" != plain ]; then
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
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "warming up"
for t in "${targets[@]}"; do
  oha -z 2s -c "$CONNS" --no-tui $oha_json_flag "${OHA_HEADERS[@]}" "http://127.0.0.1:${PORT[$t]}$URLPATH" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    echo "round $r/$ROUNDS: $t"
    before=$(cpu_ticks "${CPU_PID[$t]}")
    oha -z "$DURATION" -c "$CONNS" --no-tui $oha_json_flag "${OHA_HEADERS[@]}" \
      "http://127.0.0.1:${PORT[$t]}$URLPATH" >"$work/$t-$r.json"
    echo $(($(cpu_ticks "${CPU_PID[$t]}") - before)) >"$work/$t-$r.cpu"
  done
done

# nginx's worker is the child of its master; report the worker's peak.
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
suffix=""; [ "$SCENARIO" = plain ] || suffix="-$SCENARIO"
out="benches/results/proxy$suffix-$stamp.json"
python3 - "$work" "$ROUNDS" "$out" "$DURATION" "$CONNS" "$URLPATH" "$SCENARIO" \
  "$(hwm "$NGINX_WORKER")" "$(hwm "$NGINX_BARE_WORKER")" "$(hwm "$HAPROXY_PID")" "$(hwm "$SLUICE_PID")" "$(hwm "$FLOOR_PID")" \
  "$(getconf CLK_TCK)" "${BASE_PID:+$(hwm "$BASE_PID")}" <<'PY'
import json, statistics, sys, platform, os
work, rounds, out, duration, conns, path, scenario, rss_nginx, rss_nginx_bare, rss_haproxy, rss_sluice, rss_floor, tck, rss_base = sys.argv[1:]
tck = int(tck)
rounds = int(rounds)
rss = {"direct": None, "nginx": int(rss_nginx), "nginx_bare": int(rss_nginx_bare), "haproxy": int(rss_haproxy), "sluice": int(rss_sluice),
       "floor": int(rss_floor)}
targets = ["direct", "nginx", "nginx_bare", "haproxy", "sluice", "floor"]
if scenario != "plain":
    targets = ["nginx", "sluice"]
if rss_base:
    rss["baseline"] = int(rss_base)
    targets.append("baseline")
res = {}
for t in targets:
    runs = []
    for r in range(1, rounds + 1):
        d = json.load(open(f"{work}/{t}-{r}.json"))
        s = d["summary"]
        lat = d.get("latencyPercentiles") or d.get("latency_percentiles") or {}
        codes = d.get("statusCodeDistribution", {})
        # oha cuts the requests still in flight when -z expires; those are not proxy errors.
        errors = sum(v for k, v in d.get("errorDistribution", {}).items()
                     if k != "aborted due to deadline")
        served = sum(codes.values())
        ticks = int(open(f"{work}/{t}-{r}.cpu").read())
        runs.append({
            "rps": s["requestsPerSec"],
            # the proxy's (for direct: the backend's) user+system CPU per answered request
            "cpu_us_per_req": ticks / tck / max(served, 1) * 1e6,
            "p50_ms": (lat.get("p50") or 0) * 1000,
            "p99_ms": (lat.get("p99") or 0) * 1000,
            "non_200": sum(v for k, v in codes.items() if k != "200"),
            "errors": errors,
        })
    med = lambda k: statistics.median(x[k] for x in runs)
    res[t] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
              "cpu_us_per_req": med("cpu_us_per_req"),
              "peak_rss_kib": rss[t], "non_200": sum(x["non_200"] for x in runs),
              "errors": sum(x["errors"] for x in runs), "runs": runs}
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
}
ratios = {k: v for k, v in ratios.items() if v is not None}
if "baseline" in res:
    ratios["baseline_over_pingora_floor_rps"] = res["baseline"]["rps"] / res["floor"]["rps"]
    ratios["baseline_cpu_over_pingora_floor_cpu"] = res["baseline"]["cpu_us_per_req"] / res["floor"]["cpu_us_per_req"]
    ratios["sluice_cpu_over_baseline_cpu"] = res["sluice"]["cpu_us_per_req"] / res["baseline"]["cpu_us_per_req"]
doc = {"scenario": scenario,
       "load": {"tool": "oha", "duration": duration, "connections": int(conns), "path": path,
                "rounds": rounds, "statistic": "median"},
       "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "equivalent_config": "nginx and haproxy forward Host, X-Forwarded-For/-Proto/-Host, "
                             "X-Real-IP and X-Request-Id like Sluice; nginx_bare has no header rules",
       "threads": {"nginx": "1 worker", "nginx_bare": "1 worker", "haproxy": "nbthread 1", "sluice": 1, "floor": 1},
       "results": {k: {kk: vv for kk, vv in v.items()} for k, v in res.items()},
       "ratios": ratios}
json.dump(doc, open(out, "w"), indent=2)
print(f"\n| target | req/s | p50 ms | p99 ms | CPU us/req | peak RSS MiB | errors+non-200 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for t, v in res.items():
    r = "-" if v["peak_rss_kib"] is None else f"{v['peak_rss_kib']/1024:.1f}"
    print(f"| {t} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_us_per_req']:.1f} | {r} | {v['errors']+v['non_200']} |")
print()
for k, v in ratios.items():
    print(f"{k}: {v:.2f}")
print(f"\nwritten to {out}")
bad = {t: v["errors"] + v["non_200"] for t, v in res.items() if v["errors"] + v["non_200"]}
if bad:
    sys.exit(f"INVALID RUN: failed or non-200 responses {bad}; these numbers measure an error path")
PY
