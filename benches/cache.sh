#!/usr/bin/env bash
# Response cache: load on a cached URL. Compares, in one run, Sluice cache hits (Redis store),
# Sluice cache hits on the embedded memory store (a second Sluice without [redis]), the same URL
# through Sluice uncached, and nginx `proxy_cache` hits; then Sluice's hit latency at a moderate
# fixed rate (p50/p99).
#
# On 2+ cores the proxies (both Sluices, nginx) run on core 1 (`taskset -c 1`) and the load
# generator (`wrk -t1`), the backend and redis-server on core 0, as in `benches/proxy.sh --mode
# pinned`, and the report adds CPU per request of each proxy and of redis-server. (Until
# 2026-12-03 session 16 the pinned load came from oha.) `--mode unpinned` lets everything share
# the cores, with oha (the placement of the runs before 2026-12-03).
#
# Usage: benches/cache.sh [--duration 10s] [--conns 64] [--rounds 3] [--rate 2000]
#                         [--mode pinned|unpinned] [--baseline OLD_SLUICE_BINARY]
# --baseline adds `baseline_hit`: that binary's Redis hits in the same rounds (its own cache
# namespace, so two entry layouts never meet), for a before/after of one change on this noisy
# machine.
# Writes benches/results/cache-<UTC time>.json. Installs oha, nginx, redis-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s CONNS=64 ROUNDS=3 RATE=2000 MODE=pinned BASELINE=
[ "$(nproc)" -ge 2 ] || MODE=unpinned
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$MODE" = pinned ]; then scripts/install-deps.sh nginx wrk; else scripts/install-deps.sh nginx; fi
command -v oha >/dev/null 2>&1 || cargo install oha --locked
cargo build --release --locked -p sluice -p backend-sample

source benches/lib.sh

PROXY_CPU=() LOAD_CPU=()
if [ "$MODE" = pinned ]; then PROXY_CPU=(taskset -c 1) LOAD_CPU=(taskset -c 0); fi

REDIS=$(free_port); BACKEND=$(free_port); NGINX=$(free_port); SLUICE=$(free_port)
SLUICE_MEM=$(free_port)
"${LOAD_CPU[@]}" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no \
  --maxmemory 256mb --maxmemory-policy allkeys-lru >/dev/null &
pids+=($!); REDIS_PID=$!
declare -A PID
"${LOAD_CPU[@]}" target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>/dev/null &
pids+=($!)

# nginx workers may run as another user (nobody when started as root): let them use the cache.
mkdir -p "$work/nginx-cache"
chmod 755 "$work"
chmod 777 "$work/nginx-cache"
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=c:10m max_size=100m;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache c;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGX
"${PROXY_CPU[@]}" nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!); NGINX_MASTER=$!

cat >"$work/sluice.toml" <<SLC
[server]
listen = ["127.0.0.1:$SLUICE"]
threads = 1
grace_period_seconds = 0
upstream_keepalive_pool_size = 128
[admin]
enabled = false
[logging]
access_log = false
[redis]
url = "redis://127.0.0.1:$REDIS/"
[upstreams.b]
backends = [{ addr = "127.0.0.1:$BACKEND" }]
[[routes]]
path_prefix = "/off"
upstream = "b"
[[routes]]
upstream = "b"
cache = "warm"
SLC
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/sluice.toml" 2>"$work/sluice.log" &
pids+=($!); PID[sluice_hit]=$!; PID[sluice_uncached]=$!
# The same Sluice without [redis]: the embedded (memory) store.
sed -e "s/127.0.0.1:$SLUICE\"/127.0.0.1:$SLUICE_MEM\"/" -e '/^\[redis\]/,/^url/d' \
  "$work/sluice.toml" >"$work/sluice-mem.toml"
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/sluice-mem.toml" 2>"$work/sluice-mem.log" &
pids+=($!); PID[sluice_memory_hit]=$!
PORTS="$REDIS $BACKEND $NGINX $SLUICE $SLUICE_MEM"
TARGETS="sluice_hit sluice_memory_hit sluice_uncached nginx_hit"
declare -A URL=(
  [sluice_hit]="http://127.0.0.1:$SLUICE/cache/600"
  [sluice_memory_hit]="http://127.0.0.1:$SLUICE_MEM/cache/600"
  [sluice_uncached]="http://127.0.0.1:$SLUICE/off/cache/600"
  [nginx_hit]="http://127.0.0.1:$NGINX/cache/600"
)
if [ -n "$BASELINE" ]; then
  # The older binary on the same Redis, under its own namespace.
  SLUICE_BASE=$(free_port)
  sed -e "s/127.0.0.1:$SLUICE\"/127.0.0.1:$SLUICE_BASE\"/" "$work/sluice.toml" >"$work/sluice-base.toml"
  printf '[cache]\nnamespace = "baseline"\n' >>"$work/sluice-base.toml"
  RUST_LOG=warn "${PROXY_CPU[@]}" "$BASELINE" --config "$work/sluice-base.toml" 2>"$work/sluice-base.log" &
  pids+=($!); PID[baseline_hit]=$!
  PORTS="$PORTS $SLUICE_BASE"
  TARGETS="$TARGETS baseline_hit"
  URL[baseline_hit]="http://127.0.0.1:$SLUICE_BASE/cache/600"
fi
for p in $PORTS; do wait_port "$p"; done

# Fill the caches and check that hits really are hits.
for t in $TARGETS; do
  [ "$t" != sluice_uncached ] || continue
  u=${URL[$t]}
  curl -sf -o /dev/null "$u"
  curl -sf -D - -o /dev/null "$u" | grep -qi '^x-cache: HIT' || { echo "$u is not a cache hit" >&2; exit 1; }
done

# nginx's CPU is its worker's (the master and the cache manager do nothing under load).
PID[nginx_hit]=$(pgrep -P "$NGINX_MASTER" -f "worker process" | head -1)
# wrk writes its summary as JSON through this script (pinned mode).
write_wrk_report
load() { # load TARGET DURATION OUT: one load run, with the CPU ticks the proxy and Redis spent
  load_url "${PID[$1]}" "${URL[$1]}" "$2" "$3"
}
for t in $TARGETS; do load "$t" 2s "$work/warm-$t"; done
for r in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    echo "round $r/$ROUNDS: $t"
    load "$t" "$DURATION" "$work/$t-$r"
  done
done
echo "hit latency at $RATE req/s"
"${LOAD_CPU[@]}" oha -z "$DURATION" -c 8 -q "$RATE" --no-tui --output-format json "${URL[sluice_hit]}" >"$work/latency.json"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benches/results/cache-$stamp.json"
python3 - "$work" "$ROUNDS" "$out" "$DURATION" "$CONNS" "$RATE" "$MODE" "$(getconf CLK_TCK)" "$TARGETS" <<'PY'
import json, os, statistics, sys
work, rounds, out, duration, conns, rate, mode, tck, targets = sys.argv[1:]
rounds, tck = int(rounds), int(tck)
def summary(d):
    lat = d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    errors = sum(v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline")
    return {"rps": d["summary"]["requestsPerSec"], "p50_ms": lat["p50"] * 1000, "p99_ms": lat["p99"] * 1000,
            "bad": sum(v for k, v in codes.items() if k != "200") + errors}
def one_run(prefix):
    """One load run, wrk's or oha's, with the proxy's and Redis's CPU per answered request."""
    if os.path.exists(f"{prefix}.wrk.json"):
        d = json.load(open(f"{prefix}.wrk.json"))
        served = d["requests"]
        run = {"rps": served / (d["duration_us"] / 1e6), "p50_ms": d["p50_us"] / 1000,
               "p99_ms": d["p99_us"] / 1000, "bad": d["non2xx"] + d["errors"]}
    else:
        d = json.load(open(f"{prefix}.oha.json"))
        served = sum(d.get("statusCodeDistribution", {}).values())
        run = summary(d)
    proxy_ticks, redis_ticks, user_ticks = map(int, open(f"{prefix}.cpu").read().split())
    run["proxy_cpu_us_per_req"] = proxy_ticks / tck / max(served, 1) * 1e6
    run["proxy_user_us_per_req"] = user_ticks / tck / max(served, 1) * 1e6
    run["redis_cpu_us_per_req"] = redis_ticks / tck / max(served, 1) * 1e6
    return run
res = {}
for t in targets.split():
    runs = [one_run(f"{work}/{t}-{r}") for r in range(1, rounds + 1)]
    med = lambda k: statistics.median(x[k] for x in runs)
    res[t] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
              "proxy_cpu_us_per_req": med("proxy_cpu_us_per_req"),
              "proxy_user_us_per_req": med("proxy_user_us_per_req"),
              "redis_cpu_us_per_req": med("redis_cpu_us_per_req"),
              "bad": sum(x["bad"] for x in runs), "runs": runs}
lat = summary(json.load(open(f"{work}/latency.json")))
doc = {"load": {"tool": "wrk -t1 (core 0)" if mode == "pinned" else "oha", "duration": duration, "connections": int(conns), "rounds": rounds,
                "statistic": "median", "sluice_threads": 1, "nginx_workers": 1,
                "store": "redis (same machine); sluice_memory_hit: embedded", "mode": mode},
       "results": res,
       "hit_over_uncached_rps": res["sluice_hit"]["rps"] / res["sluice_uncached"]["rps"],
       "hit_over_nginx_hit_rps": res["sluice_hit"]["rps"] / res["nginx_hit"]["rps"],
       "memory_hit_over_nginx_hit_rps": res["sluice_memory_hit"]["rps"] / res["nginx_hit"]["rps"],
       "hit_latency_at_rate": {"rate": int(rate), "connections": 8, **lat}}
if "baseline_hit" in res:
    doc["baseline_hit_over_nginx_hit_rps"] = res["baseline_hit"]["rps"] / res["nginx_hit"]["rps"]
    # Per round, the two builds' hits side by side: the ratio this machine's drift cancels in.
    by_round = lambda k: [a[k] / b[k] for a, b in zip(res["sluice_hit"]["runs"], res["baseline_hit"]["runs"])]
    per, cpu, user = by_round("rps"), by_round("proxy_cpu_us_per_req"), by_round("proxy_user_us_per_req")
    doc["hit_over_baseline_hit_rps_by_round"] = per
    doc["hit_over_baseline_hit_cpu_by_round"] = cpu
    doc["hit_over_baseline_hit_user_cpu_by_round"] = user
json.dump(doc, open(out, "w"), indent=2)
print("\n| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | of it user | Redis CPU µs/req | bad |\n|---|---:|---:|---:|---:|---:|---:|---:|")
for t, v in res.items():
    print(f"| {t} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['proxy_cpu_us_per_req']:.1f} | {v['proxy_user_us_per_req']:.1f} | {v['redis_cpu_us_per_req']:.1f} | {v['bad']} |")
print(f"\nhit/uncached: {doc['hit_over_uncached_rps']:.2f}  hit/nginx-hit: {doc['hit_over_nginx_hit_rps']:.2f}"
      f"  memory hit/nginx-hit: {doc['memory_hit_over_nginx_hit_rps']:.2f}")
if "baseline_hit" in res:
    print(f"baseline hit/nginx-hit: {doc['baseline_hit_over_nginx_hit_rps']:.2f}  hit/baseline hit by round:"
          f" req/s {' '.join(f'{x:.3f}' for x in per)} (median {statistics.median(per):.3f}),"
          f" CPU per request {' '.join(f'{x:.3f}' for x in cpu)} (median {statistics.median(cpu):.3f}),"
          f" user CPU per request {' '.join(f'{x:.3f}' for x in user)} (median {statistics.median(user):.3f})")
print(f"hit latency at {rate} req/s: p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms (bad: {lat['bad']})")
print(f"written to {out}")
bad = {t: v["bad"] for t, v in res.items() if v["bad"]}
if bad or lat["bad"]:
    sys.exit(f"INVALID RUN: non-200 or failed responses {bad} {lat['bad']}")
PY
