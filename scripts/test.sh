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
cargo test --workspace -j "$jobs" -- --test-threads=2

