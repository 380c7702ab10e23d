#!/usr/bin/env bash
# Shim overhead: a hit through ibv_reg_mr + ibv_dereg_mr under LD_PRELOAD=libregcache_shim.so
# (over mpi-shim's fake libibverbs, no RDMA device) vs Cache::get + release of the same kind of
# buffer with the same monitor, in one command, interleaved ROUNDS times; prints the medians
# and the ratio (goal <= 2x).
#
#   benches/shim-bench.sh [ITERS] [ROUNDS]     (default 1000000 5)
#
# Builds the shim from this tree into $CARGO_TARGET_DIR/shim-bench (mpi-shim's Makefile with
# OUT= there; nothing is written under mpi-shim/). REGCACHE_MONITOR picks the monitor of both
# sides (default uffd: the host has no ummunotify module; `scripted` in the baseline is used
# for REGCACHE_MONITOR=none only to show the pass-through cost).
set -euo pipefail
iters="${1:-1000000}"
rounds="${2:-5}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -d /work ]]; then export CARGO_TARGET_DIR=/work/target-bench; else export CARGO_TARGET_DIR="$root/target"; fi
fi
out="$CARGO_TARGET_DIR/shim-bench"
mkdir -p "$out"
monitor="${REGCACHE_MONITOR:-uffd}"

make -s -C "$root/mpi-shim" OUT="$out" CARGO_TARGET_DIR="$CARGO_TARGET_DIR" \
    "$out/libregcache_shim.so" "$out/libfakeverbs.so" >/dev/null
cc -O2 -Wall -Wextra -Werror -std=gnu11 -o "$out/shim_hit" "$here/shim/shim_hit.c" \
    -L"$out" -lfakeverbs -Wl,-rpath,"$out"
(cd "$root" && cargo build -q --release -p regcache-benches --bin profile-real-hit)

shim=(); base=()
for _ in $(seq "$rounds"); do
    shim+=("$(REGCACHE_MONITOR=$monitor LD_PRELOAD="$out/libregcache_shim.so" "$out/shim_hit" "$iters" 3)")
    base+=("$("$CARGO_TARGET_DIR/release/profile-real-hit" "$monitor" "$iters" 3)")
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
s=$(median "${shim[@]}"); b=$(median "${base[@]}")
echo "monitor $monitor, $iters iterations x $rounds rounds (ns per reg+dereg / get+release)"
echo "shim rounds: ${shim[*]}"
echo "Cache::get rounds: ${base[*]}"
awk -v s="$s" -v b="$b" 'BEGIN { printf "shim %.1f ns, Cache::get+release %.1f ns, ratio %.2fx (goal <= 2x)\n", s, b, s / b }'
