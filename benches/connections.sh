#!/usr/bin/env bash
# Memory per connection: Sluice vs nginx configured alike (1 worker / threads = 1), same run.
#
# Starts one backend-sample, nginx (worker_processes 1, upstream keep-alive, a WebSocket
# location) and Sluice (threads = 1, the same routes) in front of it, then for each proxy in turn:
#   - idle: opens N client connections, sends one keep-alive `GET /ping` on each, reads the
#     answer, and holds them all open and idle;
#   - ws: opens N WebSockets to `/ws`, reads each one's greeting, and holds them open and idle;
#   - tls: as idle, over TLS (a self-signed P-256 certificate made here, TLS 1.3 from Python);
#   - h2: an HTTP/2 connection over TLS (ALPN h2), one `GET /ping` stream, then held idle
#     (the client is Python's `h2`, installed from PyPI when missing).
# The proxy's resident memory (nginx: its worker) is read before and after, once it settles;
# the difference over N is the KiB per connection. Each kind runs on a freshly started proxy. Results go to
# benches/results/connections-<UTC time>.json.
#
# Usage: benches/connections.sh [--conns 3000] [--sluice BINARY] [--only sluice|nginx] [--probe]
#                               [--kinds "idle ws tls h2"]
# --sluice measures another Sluice build (e.g. a worktree's target/release/sluice).
# --probe also times normal requests (oha, 4 connections at 500 req/s for 3 s, `GET /ping`) before
# the connections are opened and again while they are held, and reports both p50/p99: whether
# holding N connections affects anyone else. --kinds measures only the kinds named (a WebSocket
# is two descriptors in the proxy: 10,000 of them do not fit an open-file limit of 20,000).
# Installs nginx from apt when missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=3000 SLUICE_BIN="" ONLY="" PROBE="" KINDS="idle ws tls"
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) CONNS=$2; shift 2 ;;
    --sluice) SLUICE_BIN=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --probe) PROBE=1; shift ;;
    --kinds) KINDS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh nginx openssl
[ -z "$PROBE" ] || command -v oha >/dev/null 2>&1 || cargo install oha --locked
case " $KINDS " in
  *" h2 "*) python3 -c 'import h2' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check h2 ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages h2 ;;
esac
cargo build --release --locked -p sluice -p backend-sample
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n "$(ulimit -Hn)"  # every connection is a descriptor in the client, the proxy and the backend

source benches/lib.sh

BACKEND=$(free_port); NGINX=$(free_port); SLUICE=$(free_port); ADMIN=$(free_port)
NGINX_TLS=$(free_port); SLUICE_TLS=$(free_port)
# One self-signed certificate for both proxies' TLS listeners (the `tls` kind).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench -addext subjectAltName=DNS:bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
target/release/backend-sample --listen "127.0.0.1:$BACKEND" --id b1 --threads 1 2>"$work/backend.log" &
pids+=($!)
wait_port "$BACKEND"

mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
events { worker_connections $((CONNS * 2 + 256)); }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    listen 127.0.0.1:$NGINX_TLS ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location /ws {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection upgrade;
      proxy_read_timeout 3600s;
    }
  }
}
EOF

cat >"$work/sluice.toml" <<EOF
[server]
listen = ["127.0.0.1:$SLUICE"]
threads = 1
keepalive_timeout_ms = 600000
max_connections = $((CONNS * 2 + 256))
upstream_keepalive_pool_size = 64
upgrade_sock = "$work/upgrade.sock"
[[server.tls]]
listen = "127.0.0.1:$SLUICE_TLS"
cert = "$work/cert.pem"
key = "$work/key.pem"
[admin]
listen = "127.0.0.1:$ADMIN"
[logging]
access_log = false
[upstreams.b]
backends = [{ addr = "127.0.0.1:$BACKEND" }]
[[routes]]
upstream = "b"
EOF

# Opens N connections of one kind to PORT, holds them, and prints the proxy's RSS growth.
# RSS is read from /proc for PID (a comma-separated list is summed: nginx's worker).
cat >"$work/hold.py" <<'EOF'
import asyncio, base64, os, sys, time

kind, port, n, pids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tls_port = int(sys.argv[5])

def rss_kib():
    total = 0
    for pid in pids.split(","):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total

async def settle():
    # Resident memory after the last connection: wait until two reads a second apart agree.
    last = rss_kib()
    for _ in range(10):
        await asyncio.sleep(1)
        now = rss_kib()
        if abs(now - last) < 64:
            return now
        last = now
    return last

async def one(i):
    if kind in ("tls", "h2"):
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"] if kind == "h2" else ["http/1.1"])
        r, w = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx,
                                             server_hostname="bench")
    else:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    if kind == "h2":
        return await one_h2(r, w)
    if kind in ("idle", "tls"):
        w.write(b"GET /ping HTTP/1.1\r\nHost: bench\r\n\r\n")
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
    else:
        key = base64.b64encode(os.urandom(16)).decode()
        w.write((f"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        b0, b1 = await r.readexactly(2)   # the greeting frame
        await r.readexactly(b1 & 0x7f)
    return r, w

async def one_h2(r, w):
    # One HTTP/2 connection (TLS, ALPN h2): one GET /ping stream to its end, then held idle.
    import h2.config, h2.connection, h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", "/ping"), (":scheme", "https"),
                            (":authority", "bench")], end_stream=True)
    w.write(conn.data_to_send())
    await w.drain()
    done = False
    while not done:
        data = await r.read(65536)
        if not data:
            raise RuntimeError("HTTP/2 connection closed before its response")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                done = True
        w.write(conn.data_to_send())
        await w.drain()
    return r, w

async def probe():
    # Normal requests beside the held connections: p50 and p99 in ms, and the non-200 count.
    url = os.environ.get("PROBE_URL")
    if not url:
        return ""
    proc = await asyncio.create_subprocess_exec(
        "oha", "-z", "3s", "-c", "4", "-q", "500", "--no-tui", "--output-format", "json", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    import json
    d = json.loads(out)
    p = d["latencyPercentiles"]
    bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k != "200")
    # oha counts the requests still in flight when its time is up as errors.
    bad += sum(v for k, v in d.get("errorDistribution", {}).items()
               if k != "aborted due to deadline")
    return f" {p['p50'] * 1000:.3f} {p['p99'] * 1000:.3f} {bad}"

async def main():
    await asyncio.sleep(0.5)
    base = await probe()
    before = await settle()
    held = []
    sem = asyncio.Semaphore(50)
    async def guarded(i):
        async with sem:
            return await one(i)
    held = await asyncio.gather(*(guarded(i) for i in range(n)))
    after = await settle()
    held_probe = await probe()
    print(f"{before} {after} {(after - before) / n:.2f}{base}{held_probe}")
    for _, w in held:
        w.close()

asyncio.run(main())
EOF

results=()
# Each kind is measured on a fresh proxy process: memory the allocator kept from the previous
# kind's connections would otherwise be reused and hide what the next kind costs.
start_nginx() {
  "$NGINX_BIN" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
    -g "daemon off; pid $work/nginx/nginx.pid;" &
  proc=$!
  wait_port "$NGINX"
  for _ in $(seq 1 100); do
    measured=$(pgrep -P "$proc" | head -1 || true)
    [ -n "$measured" ] && return 0
    sleep 0.05
  done
  echo "no nginx worker" >&2; exit 1
}
start_sluice() {
  "$SLUICE_BIN" --config "$work/sluice.toml" 2>"$work/sluice.log" &
  proc=$!
  measured=$proc
  wait_port "$SLUICE"
}
stop_proxy() {
  kill "$proc" 2>/dev/null || true
  wait "$proc" 2>/dev/null || true
  rm -f "$work/upgrade.sock"
  sleep 1
}
measure() { # measure NAME PORT TLS_PORT: each kind on a fresh process
  local name=$1 port=$2 tls_port=$3 kind line
  for kind in $KINDS; do
    "start_$name"
    local probe_url=""
    [ -z "$PROBE" ] || probe_url="http://127.0.0.1:$port/ping"
    if ! line=$(PROBE_URL=$probe_url python3 "$work/hold.py" "$kind" "$port" "$CONNS" "$measured" "$tls_port" 2>"$work/hold.err"); then
      tail -3 "$work/hold.err" >&2
      tail -5 "$work/nginx/error.log" "$work/sluice.log" 2>/dev/null >&2
      exit 1
    fi
    stop_proxy
    read -r before after per b50 b99 bbad h50 h99 hbad <<<"$line"
    printf '%-7s %-5s %6d connections: RSS %7d KiB -> %7d KiB: %8.2f KiB each\n' \
      "$name" "$kind" "$CONNS" "$before" "$after" "$per"
    local probe_json=""
    if [ -n "$PROBE" ]; then
      printf '        normal requests (500 req/s): p50 %s ms, p99 %s ms, %s bad before; p50 %s ms, p99 %s ms, %s bad while held\n' \
        "$b50" "$b99" "$bbad" "$h50" "$h99" "$hbad"
      probe_json=",\"probe_before\":{\"p50_ms\":$b50,\"p99_ms\":$b99,\"bad\":$bbad},\"probe_held\":{\"p50_ms\":$h50,\"p99_ms\":$h99,\"bad\":$hbad}"
    fi
    results+=("{\"target\":\"$name\",\"kind\":\"$kind\",\"conns\":$CONNS,\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"kib_per_conn\":$per$probe_json}")
  done
}

[ "$ONLY" = sluice ] || measure nginx "$NGINX" "$NGINX_TLS"
[ "$ONLY" = nginx ] || measure sluice "$SLUICE" "$SLUICE_TLS"

mkdir -p benches/results
out="benches/results/connections-$(date -u +%Y%m%dT%H%M%SZ).json"
(IFS=,; echo "[${results[*]}]") >"$out"
echo "results: $out"
