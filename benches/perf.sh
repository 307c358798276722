#!/usr/bin/env bash
# Kernel and user CPU per proxied request, pinned, over interleaved rounds: where a request's
# time goes on the clock (callgrind counts user-space instructions only, and on this VM about 60%
# of a proxy's time is in the kernel), and how two builds differ in each.
#
# Usage: benches/perf.sh [--rounds 6] [--duration 5] [--conns 64] [--path /ping] [--route FILE]
#                        [--record] [--floor] [NAME=]SLUICE_BINARY...
#   Each binary runs alone on core 1 (`taskset -c 1`, threads = 1) in front of a static nginx
#   backend (`return 200`) on core 0, where `wrk -t1` loads it; binaries are loaded in turn,
#   round after round. Per round: requests, and the proxy's user and system time from
#   /proc/PID/stat; the report gives each one's median µs per request, kernel and user, and
#   req/s.
#   --floor adds the Pingora floor (target/release/examples/pingora_floor) as a target, --nginx
#   nginx (one worker) forwarding the fields Sluice does, as in `benches/proxy.sh`.
#   --route FILE appends FILE's lines to Sluice's one [[routes]] table.
#   --header 'Name: value' (repeatable) adds a request field to wrk's bare request (e.g. the ten
#   of `benches/proxy.sh --scenario browser`).
#   --record also samples each round with `perf record -e cpu-clock` (this VM has no hardware
#   counters) and prints, per symbol, the median µs per request of each target and the
#   difference to the first: what the second build spends more (or less), kernel and user.
#   --keep DIR copies each round's perf.data and symbol table to DIR/NAME-ROUND.{perf,syms}.
#   e.g. benches/perf.sh --floor --record sluice=target/release/sluice
# Traffic stays on 127.0.0.1. Figures are for comparing targets of the same run, not runs.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=6 DURATION=5 CONNS=64 URLPATH=/ping ROUTE_EXTRA="" RECORD= FLOOR= KEEP= NGINX= WRK_HEADERS=()
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --path) URLPATH=$2; shift 2 ;;
    --route) ROUTE_EXTRA=$(cat "$2"); shift 2 ;;
    --header) WRK_HEADERS+=(-H "$2"); shift 2 ;;
    --record) RECORD=1; shift ;;
    --floor) FLOOR=1; shift ;;
    --nginx) NGINX=1; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || bins=("sluice=target/release/sluice")
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (the proxy alone on core 1)" >&2; exit 2; }

scripts/install-deps.sh nginx wrk
[ -z "$RECORD" ] || command -v perf >/dev/null || scripts/install-deps.sh linux-perf
if [ -n "$FLOOR" ]; then
  [ -x target/release/examples/pingora_floor ] || cargo build --release --locked -p sluice --example pingora_floor
  bins+=("floor=target/release/examples/pingora_floor")
fi
[ -z "$NGINX" ] || bins+=("nginx=nginx")
source benches/lib.sh

BACKEND=$(free_port)
static_backend_conf "$BACKEND" >"$work/backend.conf"
taskset -c 0 nginx -c "$work/backend.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$BACKEND"

names=() ports=() ppids=()
i=0
for b in "${bins[@]}"; do
  name=${b%%=*}; bin=${b#*=}; [ "$name" != "$b" ] || name=b$i
  port=$(free_port)
  if [ "$bin" = nginx ]; then
    cat >"$work/$name.conf" <<NGX
worker_processes 1;
pid $work/$name.pid;
error_log $work/$name-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive $((CONNS * 2)); }
  map \$http_x_request_id \$sluice_request_id { "" \$request_id; default \$http_x_request_id; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Request-Id \$sluice_request_id;
      add_header X-Request-Id \$sluice_request_id always;
    }
  }
}
NGX
    taskset -c 1 nginx -c "$work/$name.conf" -g 'daemon off;' &
  elif [ "$(basename "$bin")" = pingora_floor ]; then
    taskset -c 1 "$bin" "127.0.0.1:$port" "127.0.0.1:$BACKEND" 1 $((CONNS * 2)) 2>"$work/$name.log" &
  else
    cat >"$work/$name.toml" <<SLC
[server]
listen = ["127.0.0.1:$port"]
threads = 1
grace_period_seconds = 0
upstream_keepalive_pool_size = $((CONNS * 2))
[admin]
enabled = false
[logging]
access_log = false
[upstreams.b]
backends = [{ addr = "127.0.0.1:$BACKEND" }]
[[routes]]
upstream = "b"
$ROUTE_EXTRA
SLC
    RUST_LOG=warn taskset -c 1 "$bin" --config "$work/$name.toml" 2>"$work/$name.log" &
  fi
  pids+=($!); names+=("$name"); ports+=("$port"); ppids+=($!)
  i=$((i + 1))
done
for p in "${ports[@]}"; do wait_port "$p"; done
for n in $(seq 0 $((${#names[@]} - 1))); do # nginx: measure its one worker, not the master
  if [ "${bins[$n]#*=}" = nginx ]; then ppids[n]=$(pgrep -P "${ppids[$n]}" | head -1); fi
done
for p in "${ports[@]}"; do curl -sf "http://127.0.0.1:$p$URLPATH" >/dev/null || { echo "port $p does not answer $URLPATH" >&2; exit 1; }; done

write_wrk_report
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Inter-processor interrupts so far (rescheduling and function-call ones, the remote wake-ups),
# per core: "res0 res1 cal0 cal1".
ipis() { awk '$1 == "RES:" {r0 = $2; r1 = $3} $1 == "CAL:" {c0 = $2; c1 = $3} END {print r0, r1, c0, c1}' /proc/interrupts; }
for n in $(seq 0 $((${#names[@]} - 1))); do # warm-up
  taskset -c 0 wrk -t1 -c "$CONNS" -d 2 "${WRK_HEADERS[@]}" "http://127.0.0.1:${ports[$n]}$URLPATH" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
  for n in $(seq 0 $((${#names[@]} - 1))); do
    name=${names[$n]} pid=${ppids[$n]} out="$work/${names[$n]}-$r"
    echo "round $r/$ROUNDS: $name"
    read -r u0 s0 < <(ticks "$pid")
    ipis >"$out.ipi0"
    rec=()
    if [ -n "$RECORD" ]; then
      perf record -q -e cpu-clock -F 2000 -p "$pid" -o "$out.perf" -- sleep "$DURATION" 2>/dev/null &
      rec=($!)
    fi
    WRK_OUT="$out.wrk.json" taskset -c 0 wrk -t1 -c "$CONNS" -d "$DURATION" -s "$work/report.lua" "${WRK_HEADERS[@]}" \
      "http://127.0.0.1:${ports[$n]}$URLPATH" >/dev/null
    read -r u1 s1 < <(ticks "$pid")
    ipis >"$out.ipi1"
    echo "$((u1 - u0)) $((s1 - s0))" >"$out.cpu"
    if [ -n "$RECORD" ]; then
      wait "${rec[0]}" || true
      perf report -i "$out.perf" --no-children --sort dso,sym --stdio -q -F overhead,sample,dso,sym \
        2>/dev/null >"$out.syms" || true
      [ -z "$KEEP" ] || { mkdir -p "$KEEP"; cp "$out.perf" "$out.syms" "$KEEP/"; }
    fi
  done
done

python3 - "$work" "$ROUNDS" "$(getconf CLK_TCK)" "$RECORD" "${names[@]}" <<'PY'
import json, re, statistics, sys
work, rounds, tck, record, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
med = statistics.median
res = {}
for n in names:
    rows = []
    for r in range(1, rounds + 1):
        w = json.load(open(f"{work}/{n}-{r}.wrk.json"))
        u, s = map(int, open(f"{work}/{n}-{r}.cpu").read().split())
        req = w["requests"]
        i0 = list(map(int, open(f"{work}/{n}-{r}.ipi0").read().split()))
        i1 = list(map(int, open(f"{work}/{n}-{r}.ipi1").read().split()))
        d = [b - a for a, b in zip(i0, i1)]
        rows.append({"rps": req / (w["duration_us"] / 1e6), "user": u / tck / req * 1e6,
                     "kernel": s / tck / req * 1e6, "errors": w["errors"] + w["non2xx"],
                     "ipi_to0": (d[0] + d[2]) / req, "ipi_to1": (d[1] + d[3]) / req})
    res[n] = rows
print(f"\n{'target':<12}{'req/s':>10}{'kernel µs':>11}{'user µs':>9}{'total µs':>10}{'IPIs to 0':>10}{'to 1':>6}   per round (total µs)")
for n in names:
    rows = res[n]
    tot = [x["user"] + x["kernel"] for x in rows]
    print(f"{n:<12}{med(x['rps'] for x in rows):>10.0f}{med(x['kernel'] for x in rows):>11.2f}"
          f"{med(x['user'] for x in rows):>9.2f}{med(tot):>10.2f}{med(x['ipi_to0'] for x in rows):>10.2f}"
          f"{med(x['ipi_to1'] for x in rows):>6.2f}   " + " ".join(f"{t:.1f}" for t in tot))
    if any(x["errors"] for x in rows):
        print(f"  {n}: {sum(x['errors'] for x in rows)} errors or non-2xx answers")
if len(names) > 1:
    a = names[0]
    for b in names[1:]:
        # Per-round ratios of the same round (interleaved), then their median.
        ratio = [(y["user"] + y["kernel"]) / (x["user"] + x["kernel"]) for x, y in zip(res[a], res[b])]
        print(f"{b}/{a} CPU per request, per round: " + " ".join(f"{q:.3f}" for q in ratio) + f"  median {med(ratio):.3f}")
        # User time alone: what a change to Sluice's own code (or its layout) moves; the
        # kernel's share is mostly the same system calls for both and carries most of the noise.
        ratio = [y["user"] / x["user"] for x, y in zip(res[a], res[b])]
        print(f"{b}/{a} user CPU per request, per round: " + " ".join(f"{q:.3f}" for q in ratio) + f"  median {med(ratio):.3f}")
if record:
    # perf's samples per symbol, scaled to µs per request: samples x (the round's CPU time /
    # its samples) / requests.
    per = {}
    for n in names:
        for r in range(1, rounds + 1):
            w = json.load(open(f"{work}/{n}-{r}.wrk.json"))
            u, s = map(int, open(f"{work}/{n}-{r}.cpu").read().split())
            cpu_us = (u + s) / tck * 1e6
            syms, total = {}, 0
            try:
                lines = open(f"{work}/{n}-{r}.syms").read().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
                if not m:
                    continue
                cnt, dso, kind, sym = int(m[1]), m[2], m[3], m[4].strip()
                key = ("K " if kind == "k" else "U ") + sym[:70]
                syms[key] = syms.get(key, 0) + cnt
                total += cnt
            if total:
                for k, c in syms.items():
                    per.setdefault(k, {}).setdefault(n, []).append(c * cpu_us / total / w["requests"])
    def m(k, n):
        v = per[k].get(n, [])
        return med(v + [0.0] * (rounds - len(v))) if v else 0.0
    a = names[0]
    for b in names[1:]:
        diffs = sorted(per, key=lambda k: -abs(m(k, b) - m(k, a)))[:30]
        print(f"\nby symbol, µs per request (median of rounds), largest differences {b} - {a}:")
        print(f"{'':<74}{a:>9}{b:>9}{'diff':>8}")
        for k in diffs:
            print(f"{k:<74}{m(k, a):>9.3f}{m(k, b):>9.3f}{m(k, b) - m(k, a):>+8.3f}")
PY
