#!/usr/bin/env bash
# Fuzz Sluice's parsers with cargo fuzz (libFuzzer): the config loader (the `--check` path), path
# normalisation, and the per-request rules (client IP from X-Forwarded-For, cache key, response
# hop-by-hop fields, rate-limit headers), and the route rules (Accept-Encoding, CORS origins,
# templates, rewritten paths), W3C traceparent, and the nginx configuration parser of
# `sluice import nginx` (nginx_parse). Targets live in proxy/fuzz/, their corpora in
# proxy/fuzz/corpus/ (committed; a run adds what it finds).
#
# Usage: scripts/fuzz.sh [--seconds N] [TARGET...]     (default: 60 s for each target)
# Exits non-zero when a target crashes; the crashing input is in proxy/fuzz/artifacts/TARGET/.
# Not part of the default test run (the instrumented build takes about 6 minutes on 2 cores):
# CI can call it with a short budget, e.g. `scripts/fuzz.sh --seconds 10`.
#
# The stable toolchain cannot build AddressSanitizer (`-Z` flags), so targets are built with
# `--sanitizer none`: Sluice forbids unsafe code, and what the fuzzer looks for is panics.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

scripts/install-deps.sh
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd proxy
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

failed=()
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${seconds}s" >&2
  mkdir -p "fuzz/corpus/$t"
  if ! cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in proxy/fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash" >&2
