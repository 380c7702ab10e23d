#!/bin/bash
# Builds ummunotify.ko for both Debian 12 kernels (6.1 and 6.12) and the
# guest tests, runs the whole guest suite on each kernel and prints a final
# line "N passed, M failed" (exit 1 on any failure).  A kernel whose guest
# logged a WARNING/BUG/Oops/Call Trace, timed out, died or could not unload
# the module counts one more failed test (kernel_log_clean.<kernel>).
#   vmtest/test-kmod.sh [--kernels "6.1 6.12"] [PROGRAM...]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12"
if [ "${1:-}" = --kernels ]; then
	kernels=$2
	shift 2
fi

t0=$(date +%s)
make -s -C "$ROOT/kmod/tests" || { echo "0 passed, 1 failed"; exit 1; }

total_pass=0 total_fail=0
for k in $kernels; do
	out=$(mktemp -d /tmp/vmtest-suite.XXXXXX)
	t1=$(date +%s)
	# Two NUMA nodes: umn_reval migrates pages with move_pages.
	"$HERE/run.sh" --kernel "$k" --numa 2 --out "$out" --timeout 900 --quiet -- \
		"$ROOT/kmod/tests/run-guest.sh" "$@"
	rc=$?
	pass=0 fail=0
	[ -s "$out/summary" ] && read -r pass fail <"$out/summary"
	case $rc in
	0|1)	echo "ok kernel_log_clean.$k"; pass=$((pass + 1)) ;;
	*)	echo "not ok kernel_log_clean.$k (run.sh exit $rc; logs kept in $out)"
		fail=$((fail + 1)) ;;
	esac
	if [ "$rc" = 1 ] && [ "$fail" = 0 ]; then
		fail=1	# the suite failed without a summary
	fi
	echo "# kernel $k: $pass passed, $fail failed ($(($(date +%s) - t1)) s)"
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	[ "$rc" -le 1 ] && rm -rf "$out"
done
echo "# wall time $(($(date +%s) - t0)) s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
