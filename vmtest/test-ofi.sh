#!/bin/bash
# The libfabric bridge (mpi-shim/ofi_bridge.c: ummunotify imported as libfabric's memory
# monitor) on Soft-RoCE inside Debian's kernels. mpi-shim/build/ofi_churn_test sends large
# messages over verbs;ofi_rxm from and into buffers that are munmap'ed and mmap'ed again at the
# same address for every message, each registered with fi_mr_reg (libfabric's MR cache on), and
# checks every received word. Prints "N passed, M failed".
#   vmtest/test-ofi.sh [--kernels "6.12 6.1"] [--msgs N]
#   vmtest/test-ofi.sh --guest MSGS     (inside guest-rxe.sh; used by the above)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$ROOT/mpi-shim/build
kernels="6.12 6.1"
msgs=16

pass=0 fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
nok() { echo "not ok $*"; fail=$((fail + 1)); }

# One server/client pair. $1: mode. Output in $OUT/$1.{server,client}, "rc_s rc_c" in $OUT/$1.rc.
# FI_UNIVERSE_SIZE: rxm sizes its verbs CQ as (tx + rx) * universe size; the default (256)
# exceeds rxe's max_cqe and fi_enable() fails with "Unable to create verbs CQ".
pair() {
	local mode=$1 dir srv rc_s rc_c tag=$1 xenv=${2:-X=}
	[ -n "${2:-}" ] && tag=$1.$2
	dir=$(mktemp -d)
	env REGCACHE_OFI_VERBOSE=1 FI_LOG_LEVEL=warn FI_UNIVERSE_SIZE=4 "$xenv" timeout 300 \
		"$B/ofi_churn_test" server 10.9.0.1 "$dir" --msgs "$MSGS" --mode "$mode" \
		>"$OUT/$tag.server" 2>&1 &
	srv=$!
	env REGCACHE_OFI_VERBOSE=1 FI_LOG_LEVEL=warn FI_UNIVERSE_SIZE=4 "$xenv" timeout 300 \
		"$B/ofi_churn_test" client 10.9.0.2 "$dir" --msgs "$MSGS" --mode "$mode" \
		>"$OUT/$tag.client" 2>&1
	rc_c=$?
	# A client that died leaves the server waiting for a message: do not wait 300 s.
	[ "$rc_c" -gt 1 ] && kill $srv 2>/dev/null
	wait $srv
	rc_s=$?
	echo "$rc_s $rc_c" >"$OUT/$tag.rc"
	rm -rf "$dir"
}

show() { sed "s/^/#   $1: /" "$OUT/$1.server" "$OUT/$1.client" | grep -v '^#.*: *$' | head -40; }

guest() {
	OUT=$(mktemp -d)
	MSGS=$1
	echo "# kernel $(uname -r), monitor: $(ls /dev/ummunotify 2>/dev/null || echo none)"
	fi_info -p verbs -t FI_EP_RDM 2>&1 | grep -m4 -E 'provider|domain|fabric' | sed 's/^/#   /'

	# The bridge: every message arrives intact, through libfabric's cache and our monitor.
	pair import
	show import
	read -r s c <"$OUT/import.rc"
	if [ "$s" = 0 ] && [ "$c" = 0 ] && grep -q " bad=0 " "$OUT/import.server"; then
		ok "import.data_intact"
	else
		nok "import.data_intact (exit $s/$c)"
	fi
	# The bridge was the monitor libfabric used (subscribed ranges), and saw the churn.
	if grep -qE "regcache_ofi: .*subscribes=[1-9].*invalidations=[1-9]" "$OUT/import.server" &&
		grep -qE "regcache_ofi: .*subscribes=[1-9].*invalidations=[1-9]" "$OUT/import.client"; then
		ok "import.monitor_used"
	else
		nok "import.monitor_used"
	fi
	# Addresses were reused (else the test proves nothing).
	if grep -qE "reused=([2-9]|[1-9][0-9])" "$OUT/import.client"; then
		ok "import.addresses_reused"
	else
		nok "import.addresses_reused"
	fi

	# The synchronous guarantee alone: no helper thread, so nothing is flushed behind
	# libfabric's back; every stale entry must be caught by valid() at lookup.
	pair import REGCACHE_OFI_NO_HELPER=1
	show import.REGCACHE_OFI_NO_HELPER=1
	read -r s c <"$OUT/import.REGCACHE_OFI_NO_HELPER=1.rc"
	if [ "$s" = 0 ] && [ "$c" = 0 ] && grep -q " bad=0 " "$OUT/import.REGCACHE_OFI_NO_HELPER=1.server"; then
		ok "sync_only.data_intact"
	else
		nok "sync_only.data_intact (exit $s/$c)"
	fi
	if grep -qE "regcache_ofi: .* stale=[1-9]" "$OUT/import.REGCACHE_OFI_NO_HELPER=1.client"; then
		ok "sync_only.valid_caught_stale"
	else
		nok "sync_only.valid_caught_stale"
	fi
	# Bounded watches: libfabric never unsubscribes, the bridge frees them itself.
	if grep -qE "regcache_ofi: .* live=[0-2]\$" "$OUT/import.client" "$OUT/import.server"; then
		ok "import.watches_freed"
	else
		nok "import.watches_freed"
	fi

	# Negative control: the same with valid() answering "valid" blindly. Stale registrations
	# must corrupt messages, showing that the test detects staleness and the bridge prevents it.
	pair danger
	show danger
	if grep -qE " bad=[1-9]" "$OUT/danger.server" "$OUT/danger.client" ||
		grep -q "failed:" "$OUT/danger.server" "$OUT/danger.client"; then
		ok "danger.stale_detected"
	else
		nok "danger.stale_detected"
	fi
	echo "$pass $fail" >"$VMTEST_OUT/summary"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
}

if [ "${1:-}" = --guest ]; then
	guest "$2"
	exit
fi
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--msgs) msgs=$2; shift 2 ;;
	*) echo "usage: $0 [--kernels K] [--msgs N]" >&2; exit 2 ;;
	esac
done

make -s -C "$ROOT/mpi-shim" ofi || { echo "0 passed, 1 failed"; exit 1; }
total_pass=0 total_fail=0
for k in $kernels; do
	out=$(mktemp -d /tmp/vmtest-ofi.XXXXXX)
	"$HERE/run.sh" --kernel "$k" --out "$out" --timeout 900 --quiet -- \
		"$HERE/guest-rxe.sh" "$HERE/test-ofi.sh" --guest "$msgs"
	rc=$?
	p=0 f=0
	[ -s "$out/summary" ] && read -r p f <"$out/summary"
	case $rc in
	0|1) p=$((p + 1)); echo "ok kernel_log_clean.$k" ;;
	*) f=$((f + 1)); echo "not ok kernel_log_clean.$k (run.sh exit $rc; logs in $out)" ;;
	esac
	[ "$rc" = 1 ] && [ "$f" = 0 ] && f=1
	echo "# kernel $k: $p passed, $f failed"
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	[ "$rc" -le 1 ] && rm -rf "$out"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
