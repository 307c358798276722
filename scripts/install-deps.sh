#!/usr/bin/env bash
# Install what building and testing Sluice needs, only when it is missing:
#   cmake         - Pingora builds zlib-ng with it
#   redis-server  - the test harness starts real Redis servers (rate limits, cache)
#   promtool      - Prometheus' linter checks the /metrics exposition (Debian package prometheus)
#   systemd-analyze - verifies and rates the shipped systemd unit (Debian package systemd)
#   pebble        - Let's Encrypt's ACME test server, which the ACME tests order certificates from
#   nginx         - the differential tests of `sluice import nginx` run real nginx beside Sluice
#   kubernetes-validate (PyPI) - validates the rendered Kubernetes manifests offline
# Usage: scripts/install-deps.sh [extra apt packages...]
set -euo pipefail

if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "install-deps: installing kubernetes-validate from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --user kubernetes-validate ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate
fi

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v pebble >/dev/null 2>&1 || need+=(pebble)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${need[*]} from apt" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a system redis-server on install; the tests start their own on free ports.
# Likewise a Prometheus server with the prometheus package (only promtool is wanted), and nginx.
for svc in redis-server prometheus nginx; do
  if [[ " ${need[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
