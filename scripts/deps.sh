#!/usr/bin/env bash
# Installs the system packages the build and the host tests need (idempotent; Debian 12, root).
# The VM tests install their own (vmtest/setup.sh).
set -euo pipefail
need=(build-essential pkg-config linux-libc-dev libucx-dev libibverbs-dev librdmacm-dev libclang-dev)
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
