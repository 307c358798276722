#!/usr/bin/env bash
# Regenerates `proxy/link-order.txt`, the call graph lld lays the release binary's code out by
# (`proxy/build.rs`; docs/benchmarks.md, session 23): counts which function calls which, per
# request, under callgrind for the traffic Sluice is tuned for, and writes the edges.
#
# Usage: benches/link_order.sh [--check] [SLUICE_BINARY]   (default target/release/sluice)
#   Scenarios and the share of traffic each stands for: a plain proxied request (1.0), the rule
#   set of issue 15 (0.5), a memory-store cache hit (0.5), HTTP/2 over TLS (0.5).
#   --check only reports how many of the file's functions the binary still defines (symbol
#   names carry a hash of each crate's build metadata, which changes with its version, its
#   features and the Rust release; missing ones are skipped by the linker, so an old file
#   costs nothing but its effect).
# The names are those of the binary as the demo, Docker and the benches build it, together with
# backend-sample: `cargo build --release -p sluice` alone unifies dependency features
# differently (backend-sample turns on serde's and rand's defaults, hyper's server, ...), and
# about half of the names differ. Run it after a change that moves the request path a lot:
#   cargo build --release -p sluice -p backend-sample && benches/link_order.sh &&
#   cargo build --release -p sluice -p backend-sample
# Traffic stays on 127.0.0.1; takes about five minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK=
[ "${1:-}" = --check ] && { CHECK=1; shift; }
BIN=${1:-target/release/sluice}
OUT=proxy/link-order.txt

if [ -n "$CHECK" ]; then
  nm --defined-only "$BIN" | awk '{print $3}' | sort -u >"${TMPDIR:-/tmp}/link-order-syms.$$"
  awk '{print $1; print $2}' "$OUT" | sort -u |
    awk -v syms="${TMPDIR:-/tmp}/link-order-syms.$$" '
      BEGIN { while ((getline s < syms) > 0) have[s] = 1 }
      { n++; if ($1 in have) found++ }
      END { printf "%d of %d ordered functions are in the binary\n", found, n }'
  rm -f "${TMPDIR:-/tmp}/link-order-syms.$$"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
specs=()
# scenario NAME SHARE CALLGRIND_ARGS... -> one dump of round 1 with its request count
scenario() {
  local name=$1 share=$2
  shift 2
  local reqs
  reqs=$(VALGRIND_OPTS=--demangle=no benches/callgrind.sh --keep "$work" "$@" "$name=$BIN" |
    awk -v n="$name" '$1 == n && /requests/ {print $2; exit}')
  specs+=("$share:$reqs:$work/$name.1.callgrind")
  echo "$name: $reqs requests" >&2
}
scenario plain 1.0
scenario rules 0.5 --route benches/rules-route.toml --path /app/ping
scenario cache 0.5 --route <(echo 'cache = "warm"') --path /cache/600
scenario h2 0.5 --h2 --seconds 12
python3 benches/link_order.py "$BIN" "$OUT" "${specs[@]}"
