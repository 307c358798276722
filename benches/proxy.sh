#!/usr/bin/env bash
# Sluice vs nginx vs HAProxy vs direct-to-backend, under the same oha load.
#
# Builds release binaries, starts one backend-sample, and puts nginx (1 worker), HAProxy (1 thread),
# Sluice (1 thread) and the Pingora floor (proxy/examples/pingora_floor.rs: the smallest Pingora
# proxy, built on the same vendored Pingora, 1 thread) in front of it, each with upstream
# keep-alive sized to the client concurrency. Runs ROUNDS interleaved rounds of `oha -z DURATION -c CONNS` against each target,
# then reports medians of req/s, p50 and p99, each proxy's peak RSS, and the Sluice/nginx and
# Sluice/HAProxy ratios. Results go to benches/results/proxy-<UTC time>.json.
#
# Usage: benches/proxy.sh [--duration 10s] [--conns 64] [--rounds 3] [--path /ping]
# Installs nginx and haproxy from apt and oha with cargo when missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s CONNS=64 ROUNDS=3 URLPATH=/ping THREADS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --path) URLPATH=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh nginx haproxy
command -v oha >/dev/null 2>&1 || cargo install oha --locked
cargo build --release --locked -p sluice -p backend-sample
cargo build --release --locked -p sluice --example pingora_floor

source benches/lib.sh

BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); SLUICE=$(free_port); FLOOR=$(free_port)
KEEPALIVE=$((CONNS * 2))

target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>"$work/backend.log" &
pids+=($!)

cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive $KEEPALIVE; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!); NGINX_PID=$!

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
RUST_LOG=warn target/release/sluice --config "$work/sluice.toml" 2>"$work/sluice.log" &
pids+=($!); SLUICE_PID=$!

target/release/examples/pingora_floor "127.0.0.1:$FLOOR" "127.0.0.1:$BACKEND" "$THREADS" "$KEEPALIVE" \
  2>"$work/floor.log" &
pids+=($!); FLOOR_PID=$!

for p in $BACKEND $NGINX $HAPROXY $SLUICE $FLOOR; do wait_port "$p"; done

oha_json_flag="--output-format json"
oha --help 2>&1 | grep -q -- '--output-format' || oha_json_flag="--json"

declare -A PORT=([direct]=$BACKEND [nginx]=$NGINX [haproxy]=$HAPROXY [sluice]=$SLUICE [floor]=$FLOOR)
targets=(direct nginx haproxy sluice floor)
# Whose CPU time each round is charged to: the proxy's (nginx: its worker), or for direct the
# backend's. CPU per request is steadier than req/s on a shared machine.
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || echo "$NGINX_PID")
declare -A CPU_PID=([direct]=${pids[0]} [nginx]=$NGINX_WORKER [haproxy]=$HAPROXY_PID [sluice]=$SLUICE_PID [floor]=$FLOOR_PID)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "warming up"
for t in "${targets[@]}"; do
  oha -z 2s -c "$CONNS" --no-tui $oha_json_flag "http://127.0.0.1:${PORT[$t]}$URLPATH" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    echo "round $r/$ROUNDS: $t"
    before=$(cpu_ticks "${CPU_PID[$t]}")
    oha -z "$DURATION" -c "$CONNS" --no-tui $oha_json_flag \
      "http://127.0.0.1:${PORT[$t]}$URLPATH" >"$work/$t-$r.json"
    echo $(($(cpu_ticks "${CPU_PID[$t]}") - before)) >"$work/$t-$r.cpu"
  done
done

# nginx's worker is the child of its master; report the worker's peak.
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benches/results/proxy-$stamp.json"
python3 - "$work" "$ROUNDS" "$out" "$DURATION" "$CONNS" "$URLPATH" \
  "$(hwm "$NGINX_WORKER")" "$(hwm "$HAPROXY_PID")" "$(hwm "$SLUICE_PID")" "$(hwm "$FLOOR_PID")" \
  "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys, platform, os
work, rounds, out, duration, conns, path, rss_nginx, rss_haproxy, rss_sluice, rss_floor, tck = sys.argv[1:]
tck = int(tck)
rounds = int(rounds)
rss = {"direct": None, "nginx": int(rss_nginx), "haproxy": int(rss_haproxy), "sluice": int(rss_sluice),
       "floor": int(rss_floor)}
res = {}
for t in ["direct", "nginx", "haproxy", "sluice", "floor"]:
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
ratios = {
    "sluice_over_nginx_rps": res["sluice"]["rps"] / res["nginx"]["rps"],
    "sluice_over_haproxy_rps": res["sluice"]["rps"] / res["haproxy"]["rps"],
    "sluice_over_direct_rps": res["sluice"]["rps"] / res["direct"]["rps"],
    "sluice_p99_over_nginx_p99": res["sluice"]["p99_ms"] / res["nginx"]["p99_ms"],
    "sluice_over_pingora_floor_rps": res["sluice"]["rps"] / res["floor"]["rps"],
    "sluice_cpu_over_nginx_cpu": res["sluice"]["cpu_us_per_req"] / res["nginx"]["cpu_us_per_req"],
}
doc = {"load": {"tool": "oha", "duration": duration, "connections": int(conns), "path": path,
                "rounds": rounds, "statistic": "median"},
       "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "threads": {"nginx": "1 worker", "haproxy": "nbthread 1", "sluice": 1, "floor": 1},
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
