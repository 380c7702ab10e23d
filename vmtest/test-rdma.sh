#!/bin/bash
# End-to-end RDMA test of the cache over Soft-RoCE, in Debian's 6.1 and 6.12 kernels: builds
# regcache-rdmatest (release; CARGO_TARGET_DIR respected) and, in one guest per kernel with
# rxe0/veth0 and rxe1/veth1 (guest-rxe.sh), runs server (rxe0) + client (rxe1):
#   rdma_ummunotify  --monitor ummunotify, N transfers (WRITE/READ/SEND), 0 corruptions
#   rdma_uffd        --monitor uffd, same
#   rdma_negative    --no-invalidation: must detect corruption or a remote access error
# plus kernel_log_clean (no WARNING/BUG/Oops in the guest).  Prints "N passed, M failed".
#   vmtest/test-rdma.sh [--kernels "6.1 6.12"] [--transfers N] [--negative-transfers N]
#   vmtest/test-rdma.sh --bench [--kernels 6.12]   # numbers for docs/bench-rdma.md
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12" transfers=10000 negative=2000 bench=0
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--transfers) transfers=$2; shift 2 ;;
	--negative-transfers) negative=$2; shift 2 ;;
	--bench) bench=1; shift ;;
	*) echo "usage: $0 [--kernels \"6.1 6.12\"] [--transfers N] [--negative-transfers N] [--bench]" >&2
	   exit 2 ;;
	esac
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/regcache-rdmatest

t0=$(date +%s)
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p regcache-rdmatest) ||
	{ echo "0 passed, 1 failed"; exit 1; }

if [ "$bench" = 1 ]; then
	for k in $kernels; do
		echo "## kernel $k"
		"$HERE/run.sh" --kernel "$k" --timeout 900 --quiet -- \
			"$HERE/guest-rxe.sh" "$HERE/guest-rdma.sh" bench "$BIN"
	done
	exit
fi

total_pass=0 total_fail=0
for k in $kernels; do
	out=$(mktemp -d /tmp/vmtest-rdma.XXXXXX)
	t1=$(date +%s)
	"$HERE/run.sh" --kernel "$k" --out "$out" --timeout 900 --quiet -- \
		"$HERE/guest-rxe.sh" "$HERE/guest-rdma.sh" suite "$BIN" "$transfers" "$negative"
	rc=$?
	pass=0 fail=0
	for name in rdma_ummunotify rdma_uffd rdma_negative; do
		r=$(awk -v n="$name" '$1 == n { print $2 }' "$out/results" 2>/dev/null)
		if [ "$r" = 0 ]; then
			echo "ok $name.$k"; pass=$((pass + 1))
		else
			echo "not ok $name.$k (exit ${r:-none}; log in $out/$name.log)"; fail=$((fail + 1))
		fi
	done
	if [ "$rc" = 0 ]; then
		echo "ok kernel_log_clean.$k"; pass=$((pass + 1))
	else
		echo "not ok kernel_log_clean.$k (run.sh exit $rc; logs kept in $out)"; fail=$((fail + 1))
	fi
	echo "# kernel $k: $pass passed, $fail failed ($(($(date +%s) - t1)) s)"
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	[ "$fail" = 0 ] && rm -rf "$out"
done
echo "# wall time $(($(date +%s) - t0)) s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
