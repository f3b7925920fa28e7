#!/usr/bin/env bash
# Installs what building and testing Rocketraft needs on a fresh Debian machine with a Rust
# toolchain: libclang (RocksDB's bindgen), a C++ compiler, Node.js and the RocketMQ 5 Python
# client for the compatibility tests, Prometheus and Chromium for the metrics and console
# tests. Idempotent; quiet when all is there.
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The third-party client compatibility test runs ali-ons on Node.js.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The jepsen harness: nftables for partitions and packet loss, faketime for clock skew.
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v faketime >/dev/null 2>&1 || need+=(faketime)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install ${need[*]} (or install them yourself: apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The metrics test scrapes a local cluster with a real Prometheus server (Debian's package; its
# recommended exporters are not needed).
if ! command -v prometheus >/dev/null 2>&1; then
  echo "setup: installing prometheus" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install prometheus (or: apt-get install --no-install-recommends prometheus)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The web console's test renders its pages in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install chromium (or: apt-get install --no-install-recommends chromium)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The test command's lint gates need rustfmt and clippy (in rustup's default profile; added
# when the toolchain was installed with a smaller one).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    echo "setup: adding the rustfmt and clippy components" >&2
    rustup component add rustfmt clippy >/dev/null
  else
    echo "setup: cargo fmt and cargo clippy are missing; install rustfmt and clippy for this toolchain" >&2
    exit 1
  fi
fi

# The official RocketMQ 5 Python client, for the gRPC proxy compatibility test.
if ! python3 -c "import rocketmq" >/dev/null 2>&1; then
  command -v python3 >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq python3 python3-pip >/dev/null; }
  echo "setup: installing rocketmq-python-client" >&2
  python3 -m pip install --quiet --disable-pip-version-check rocketmq-python-client==5.1.2 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages rocketmq-python-client==5.1.2
fi
