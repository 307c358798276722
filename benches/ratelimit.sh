#!/usr/bin/env bash
# Cost of rate limiting: oha against the same route with and without a limit (one that is never
# reached, counted in a real redis-server), interleaved, plus raw limiter checks per second.
# Targets: `unlimited`; `limited` (the default `lease_batch`, so this never-reached limit is
# leased); `limited_no_lease` (`lease_batch = 1`: one Redis check per request, the case of limits
# too small to lease); with --baseline OLD_SLUICE_BINARY also `baseline_no_lease`, that binary
# with the no-lease config, in the same rounds.
#
# On 2+ cores (`--mode pinned`, the default there) every Sluice runs with `threads = 1` on core 1
# (`taskset -c 1`); the load generator (`wrk -t1`), a static nginx backend (`return 200`) and
# redis-server share core 0, as in `benches/proxy.sh`: the ratio is then what a limit costs the
# proxy's own core, and the report adds CPU per request of each Sluice and of redis-server.
# (Until 2026-12-03 session 16 the pinned mode loaded with oha and backend-sample; the figures
# of both placements are in docs/benchmarks.md.) `--mode
# unpinned` lets everything share the cores with `threads = 2`, oha and backend-sample (the
# placement of the runs before 2026-12-03 session 15).
#
# Usage: benches/ratelimit.sh [--duration 10s] [--conns 64] [--rounds 3] [--baseline BIN]
#                             [--mode pinned|unpinned] [--no-raw-checks]
# --no-raw-checks skips the raw limiter checks (`cargo bench`, whose release build with the
# release profile's whole-program LTO takes several minutes when it is not built yet).
# Writes benches/results/ratelimit-<UTC time>.json. Installs oha, redis-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s CONNS=64 ROUNDS=3 BASELINE="" MODE=pinned RAW_CHECKS=1
[ "$(nproc)" -ge 2 ] || MODE=unpinned
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-raw-checks) RAW_CHECKS=; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$MODE" = pinned ]; then scripts/install-deps.sh nginx wrk; else scripts/install-deps.sh; fi
command -v oha >/dev/null 2>&1 || cargo install oha --locked
cargo build --release --locked -p sluice -p backend-sample

source benches/lib.sh

PROXY_CPU=() LOAD_CPU=() THREADS=2
case "$MODE" in
  pinned) PROXY_CPU=(taskset -c 1) LOAD_CPU=(taskset -c 0) THREADS=1 ;;
  unpinned) ;;
  *) echo "--mode is pinned or unpinned, not $MODE" >&2; exit 2 ;;
esac

REDIS=$(free_port); BACKEND=$(free_port); PLAIN=$(free_port); LIMITED=$(free_port)
NOLEASE=$(free_port); BASE_PORT=$(free_port)
"${LOAD_CPU[@]}" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
REDIS_PID=$!
if [ "$MODE" = pinned ]; then
  # A static backend that costs core 0 little, as in benches/proxy.sh.
  static_backend_conf "$BACKEND" >"$work/backend.conf"
  "${LOAD_CPU[@]}" nginx -c "$work/backend.conf" -g 'daemon off;' &
else
  target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 2>/dev/null &
fi
pids+=($!)
common="[admin]
enabled = false
[logging]
access_log = false
[upstreams.b]
backends = [{ addr = \"127.0.0.1:$BACKEND\" }]
[[routes]]
upstream = \"b\""
printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = %s\ngrace_period_seconds = 0\n%s\n' "$PLAIN" "$THREADS" "$common" >"$work/plain.toml"
printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = %s\ngrace_period_seconds = 0\n%s\n[redis]\nurl = "redis://127.0.0.1:%s/"\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 1000000000\n' \
  "$LIMITED" "$THREADS" "$common" "$REDIS" >"$work/limited.toml"
printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = %s\ngrace_period_seconds = 0\n%s\n[redis]\nurl = "redis://127.0.0.1:%s/"\n[rate_limit]\nlease_batch = 1\n[rate_limit.tiers.anonymous]\nlimit = 1000000000\n' \
  "$NOLEASE" "$THREADS" "$common" "$REDIS" >"$work/nolease.toml"
sed "s/127.0.0.1:$NOLEASE\"/127.0.0.1:$BASE_PORT\"/" "$work/nolease.toml" >"$work/baseline.toml"
declare -A PID
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/plain.toml" 2>"$work/plain.log" &
pids+=($!); PID[unlimited]=$!
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/limited.toml" 2>"$work/limited.log" &
pids+=($!); PID[limited]=$!
RUST_LOG=warn "${PROXY_CPU[@]}" target/release/sluice --config "$work/nolease.toml" 2>"$work/nolease.log" &
pids+=($!); PID[limited_no_lease]=$!
ports="$REDIS $BACKEND $PLAIN $LIMITED $NOLEASE"
TARGETS="unlimited limited limited_no_lease"
if [ -n "$BASELINE" ]; then
  RUST_LOG=warn "${PROXY_CPU[@]}" "$BASELINE" --config "$work/baseline.toml" 2>"$work/baseline.log" &
  pids+=($!); PID[baseline_no_lease]=$!
  ports="$ports $BASE_PORT"
  TARGETS="$TARGETS baseline_no_lease"
fi
for p in $ports; do wait_port "$p"; done

# The limited route answers with rate-limit headers: make sure limiting is really on.
curl -sf -D - -o /dev/null "http://127.0.0.1:$LIMITED/ping" | grep -qi '^x-ratelimit-limit' \
  || { echo "limited Sluice sends no rate-limit headers" >&2; exit 1; }

declare -A PORT=([unlimited]=$PLAIN [limited]=$LIMITED [limited_no_lease]=$NOLEASE [baseline_no_lease]=$BASE_PORT)
# wrk writes its summary as JSON through this script (pinned mode).
write_wrk_report
load() { # load TARGET DURATION OUT: one load run, with the CPU ticks the proxy and Redis spent
  load_url "${PID[$1]}" "http://127.0.0.1:${PORT[$1]}/ping" "$2" "$3"
}
for t in $TARGETS; do load "$t" 2s "$work/warm-$t"; done
for r in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    echo "round $r/$ROUNDS: $t"
    load "$t" "$DURATION" "$work/$t-$r"
  done
done

: >"$work/checks.jsonl"
if [ -n "$RAW_CHECKS" ]; then
  echo "limiter checks per second (64 concurrent callers, 5 s each)"
  REDIS_URL="redis://127.0.0.1:$REDIS/" cargo bench --locked -q -p sluice --bench ratelimit_checks >"$work/checks.jsonl"
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="benches/results/ratelimit-$stamp.json"
python3 - "$work" "$ROUNDS" "$out" "$DURATION" "$CONNS" "$THREADS" "$TARGETS" "$MODE" "$(getconf CLK_TCK)" <<'PY'
import json, os, statistics, sys
work, rounds, out, duration, conns, threads, targets, mode, tck = sys.argv[1:]
rounds, tck = int(rounds), int(tck)
res = {}
for t in targets.split():
    runs = []
    for r in range(1, rounds + 1):
        prefix = f"{work}/{t}-{r}"
        if os.path.exists(f"{prefix}.wrk.json"):
            d = json.load(open(f"{prefix}.wrk.json"))
            served = d["requests"]
            run = {"rps": served / (d["duration_us"] / 1e6), "p50_ms": d["p50_us"] / 1000,
                   "p99_ms": d["p99_us"] / 1000, "non_200": d["non2xx"], "errors": d["errors"]}
        else:
            d = json.load(open(f"{prefix}.oha.json"))
            lat = d["latencyPercentiles"]
            codes = d.get("statusCodeDistribution", {})
            served = sum(codes.values())
            run = {"rps": d["summary"]["requestsPerSec"], "p50_ms": lat["p50"] * 1000,
                   "p99_ms": lat["p99"] * 1000,
                   "non_200": sum(v for k, v in codes.items() if k != "200"),
                   # oha cuts the requests in flight when -z expires; not proxy errors.
                   "errors": sum(v for k, v in d.get("errorDistribution", {}).items()
                                 if k != "aborted due to deadline")}
        sluice_ticks, redis_ticks = map(int, open(f"{prefix}.cpu").read().split()[:2])
        run["sluice_cpu_us_per_req"] = sluice_ticks / tck / max(served, 1) * 1e6
        run["redis_cpu_us_per_req"] = redis_ticks / tck / max(served, 1) * 1e6
        runs.append(run)
    med = lambda k: statistics.median(x[k] for x in runs)
    res[t] = {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
              "sluice_cpu_us_per_req": med("sluice_cpu_us_per_req"),
              "redis_cpu_us_per_req": med("redis_cpu_us_per_req"),
              "non_200": sum(x["non_200"] for x in runs),
              "errors": sum(x["errors"] for x in runs), "runs": runs}
checks = [json.loads(l) for l in open(f"{work}/checks.jsonl") if l.startswith("{")]
doc = {"load": {"tool": "wrk -t1 (core 0)" if mode == "pinned" else "oha",
                "backend": "static nginx (core 0)" if mode == "pinned" else "backend-sample",
                "duration": duration, "connections": int(conns), "rounds": rounds,
                "sluice_threads": int(threads), "statistic": "median", "mode": mode},
       "results": res,
       "limited_over_unlimited_rps": res["limited"]["rps"] / res["unlimited"]["rps"],
       "p99_added_ms": res["limited"]["p99_ms"] - res["unlimited"]["p99_ms"],
       "no_lease_over_unlimited_rps": res["limited_no_lease"]["rps"] / res["unlimited"]["rps"],
       "no_lease_p99_added_ms": res["limited_no_lease"]["p99_ms"] - res["unlimited"]["p99_ms"],
       "no_lease_sluice_cpu_over_unlimited": res["limited_no_lease"]["sluice_cpu_us_per_req"]
       / res["unlimited"]["sluice_cpu_us_per_req"],
       "checks": checks}
json.dump(doc, open(out, "w"), indent=2)
print("\n| route | req/s | p50 ms | p99 ms | Sluice CPU µs/req | Redis CPU µs/req | non-200 |\n|---|---:|---:|---:|---:|---:|---:|")
for t, v in res.items():
    print(f"| {t} | {v['rps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['sluice_cpu_us_per_req']:.1f} | {v['redis_cpu_us_per_req']:.1f} | {v['non_200']} |")
print(f"\nlimited/unlimited req/s: {doc['limited_over_unlimited_rps']:.2f}; p99 added: {doc['p99_added_ms']:.2f} ms")
print(f"limited_no_lease/unlimited req/s: {doc['no_lease_over_unlimited_rps']:.2f}; p99 added: {doc['no_lease_p99_added_ms']:.2f} ms")
print(f"limited_no_lease/unlimited Sluice CPU per request: {doc['no_lease_sluice_cpu_over_unlimited']:.2f}")
if "baseline_no_lease" in res:
    doc["baseline_no_lease_over_unlimited_rps"] = res["baseline_no_lease"]["rps"] / res["unlimited"]["rps"]
    json.dump(doc, open(out, "w"), indent=2)
    print(f"baseline_no_lease/unlimited req/s: {doc['baseline_no_lease_over_unlimited_rps']:.2f}")
for c in checks:
    print(f"{c['store']} checks/s: {c['checks_per_sec']} (bad: {c['not_from_store_or_denied']})")
print(f"written to {out}")
bad = {t: v["errors"] + v["non_200"] for t, v in res.items() if v["errors"] + v["non_200"]}
bad.update({c["store"]: c["not_from_store_or_denied"] for c in checks if c["not_from_store_or_denied"]})
if bad:
    sys.exit(f"INVALID RUN: failed or non-200 responses / bad checks {bad}; not a result")
PY
