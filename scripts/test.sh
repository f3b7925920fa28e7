#!/usr/bin/env bash
# Runs every Rocketraft test: unit, property and integration tests of the whole workspace,
# including the `kill -9` test of the real binary and the third-party client (ali-ons) test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Reuse one target directory across clones (RocksDB from source takes minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rocketraft-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
jobs="${CARGO_BUILD_JOBS:-$(nproc)}"

echo "== build (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets -j "$jobs"
echo "== test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -j "$jobs" -- --test-threads=2 2>&1 | tee "$log" || status=$?

# One closing line for the whole run (cargo prints one per test binary, the last being doc-tests).
totals=$(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed/) p += $i
      if ($(i + 1) ~ /^failed/) f += $i
    }
  } END { printf "%d passed, %d failed", p, f }' "$log")
echo "summary: $totals"
exit "$status"

