#!/bin/bash
# Runs the ummunotify micro-benchmarks (kmod/tests/umn_bench.c) in the
# guest on each kernel; the numbers go to stdout (see docs/bench-kmod.md).
#   vmtest/bench-kmod.sh [--kernels "6.1 6.12"] [ITERATIONS]
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12"
if [ "${1:-}" = --kernels ]; then
	kernels=$2
	shift 2
fi
iters=${1:-2000}
make -s -C "$ROOT/kmod/tests"
for k in $kernels; do
	echo "=== kernel $k"
	"$HERE/run.sh" --kernel "$k" --quiet --timeout 1200 \
		-e UMN_BENCH_ITERS="$iters" -- "$ROOT/kmod/tests/build/umn_bench"
done
