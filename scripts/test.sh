#!/usr/bin/env bash
# The whole test suite: installs what the build and tests need, then runs every test of the
# workspace (unit tests and the integration tests in tests/, which start real processes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked "$@"
