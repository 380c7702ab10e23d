#!/usr/bin/env bash
# Installs the system packages the build and the host tests need (idempotent; Debian 12, root).
# The VM harness installs its own (vmtest/setup.sh); Open MPI and UCX for vmtest/test-ucx.sh
# (the UCX bridge; the guest runs the host's binaries) are here.
set -euo pipefail
need=(build-essential pkg-config linux-libc-dev libucx-dev libfabric-dev libibverbs-dev librdmacm-dev libclang-dev
    openmpi-bin libopenmpi-dev libucx0 ucx-utils)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo not found (install Rust with rustup)"; exit 1; }
