#!/usr/bin/env bash
# Builds the C library in release mode and installs it under PREFIX (default /usr/local):
#   PREFIX/lib/libregcache.so.VERSION, libregcache.so.0 -> it (the SONAME), libregcache.so -> it
#   PREFIX/lib/libregcache.a
#   PREFIX/include/regcache.h            (the checked-in header, see gen-header.sh)
#   PREFIX/lib/pkgconfig/regcache.pc
# Respects CARGO_TARGET_DIR (default: the workspace's target/) and CARGO.
set -euo pipefail
ffi="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$ffi")"
prefix="${1:-/usr/local}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
# A relative CARGO_TARGET_DIR is relative to the caller's directory: resolve it before cd.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    mkdir -p "$CARGO_TARGET_DIR"
    CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd)"
    export CARGO_TARGET_DIR
fi
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
"${CARGO:-cargo}" build --release -q -p regcache-ffi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
[[ -n "$version" ]] || { echo "install.sh: no version in Cargo.toml" >&2; exit 1; }
out="$target/release"

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$out/libregcache.so" "$prefix/lib/libregcache.so.$version"
ln -sfn "libregcache.so.$version" "$prefix/lib/libregcache.so.0"
ln -sfn "libregcache.so.0" "$prefix/lib/libregcache.so"
install -m 0644 "$out/libregcache.a" "$prefix/lib/libregcache.a"
install -m 0644 "$ffi/include/regcache.h" "$prefix/include/regcache.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$ffi/regcache.pc.in" \
    >"$prefix/lib/pkgconfig/regcache.pc"
echo "installed libregcache $version under $prefix"
