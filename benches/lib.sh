# Shared setup for the benchmark scripts (sourced, not run): a work directory, processes started
# into `pids` and stopped on exit, and helpers to pick a free port and wait for a listener.
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on $1" >&2; return 1
}
# static_backend_conf PORT [SERVER_LINES]: the config of a static nginx backend that costs the
# load's core little (one worker, `return 200 "pong"`), listening on PORT, with SERVER_LINES
# (more locations, fields) in its server block. Its pid file and error log go to $work.
static_backend_conf() {
  cat <<NGX
worker_processes 1;
pid $work/backend.pid;
error_log $work/backend-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$1;
${2:-}
    location / { return 200 "pong"; }
  }
}
NGX
}
# User + system CPU ticks of a comma-separated list of processes (FIELDS '$14' for user only).
cpu_ticks() {
  local t=0 p
  for p in ${1//,/ }; do t=$((t + $(awk "{print ${2:-\$14 + \$15}}" "/proc/$p/stat"))); done
  echo "$t"
}
# `$work/report.lua`: a wrk script whose summary (requests, duration, errors, non-2xx, p50, p99,
# p99.9 in µs) goes as one JSON line to the file named by WRK_OUT.
write_wrk_report() {
  cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  local f = io.open(os.getenv("WRK_OUT"), "w")
  f:write(string.format('{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d}\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9)))
  f:close()
end
LUA
}
# load_url PIDS URL DURATION OUT: one load run against URL (wrk -t1 on LOAD_CPU when MODE is
# pinned, oha otherwise, CONNS connections), then "<ticks of PIDS> <ticks of REDIS_PID> <user
# ticks of PIDS>" spent during it into OUT.cpu. wrk's summary goes to OUT.wrk.json (write_wrk_report first), oha's to
# OUT.oha.json.
load_url() {
  local pids=$1 url=$2 d=$3 out=$4 p0 r0 u0
  p0=$(cpu_ticks "$pids"); r0=$(cpu_ticks "$REDIS_PID"); u0=$(cpu_ticks "$pids" '$14')
  if [ "$MODE" = pinned ]; then
    WRK_OUT="$out.wrk.json" "${LOAD_CPU[@]}" wrk -t1 -c "$CONNS" -d "$d" -s "$work/report.lua" \
      "$url" >/dev/null
  else
    oha -z "$d" -c "$CONNS" --no-tui --output-format json "$url" >"$out.oha.json"
  fi
  echo "$(($(cpu_ticks "$pids") - p0)) $(($(cpu_ticks "$REDIS_PID") - r0))" \
    "$(($(cpu_ticks "$pids" '$14') - u0))" >"$out.cpu"
}
