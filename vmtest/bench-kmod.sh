#!/bin/bash
# Runs the ummunotify micro-benchmarks (kmod/tests/umn_bench.c) in the
# guest on each kernel; the numbers go to stdout (see docs/bench-kmod.md).
#   vmtest/bench-kmod.sh [--kernels "6.1 6.12"] [--scale N] [ITERATIONS [TEST...]]
# TEST: "bench" (munmap, mprotect, REGISTER/UNREGISTER) and/or "scale" (one
# fd with N ranges, 10^6 by default: costs and kernel memory per range);
# both by default.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12"
scale=1000000
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--scale) scale=$2; shift 2 ;;
	*) break ;;
	esac
done
iters=${1:-2000}
[ $# -gt 0 ] && shift
make -s -C "$ROOT/kmod/tests"
for k in $kernels; do
	echo "=== kernel $k"
	"$HERE/run.sh" --kernel "$k" --quiet --timeout 1800 \
		-e UMN_BENCH_ITERS="$iters" -e UMN_BENCH_SCALE="$scale" -- \
		"$ROOT/kmod/tests/build/umn_bench" "$@"
done
