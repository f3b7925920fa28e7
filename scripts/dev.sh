#!/usr/bin/env bash
# Builds and runs `rocketraft dev`: NameServer (with a one-node controller), broker and gRPC proxy
# in one process on loopback, data in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rocketraft-target}"
exec cargo run --release --bin rocketraft -- dev "$@"
