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
# shellcheck source=vmtest/pairtest.sh
. "$HERE/pairtest.sh"

# One server/client pair. $1: mode, $2: an extra NAME=VALUE for both (optional). Output in
# $OUT/TAG.{server,client}, "rc_s rc_c" in $OUT/TAG.rc (run_pair), TAG = $1 or $1.$2.
# FI_UNIVERSE_SIZE: rxm sizes its verbs CQ as (tx + rx) * universe size; the default (256)
# exceeds rxe's max_cqe and fi_enable() fails with "Unable to create verbs CQ".
pair() {
	local tag=$1
	[ -n "${2:-}" ] && tag=$1.$2
	PAIR_DIR=$(mktemp -d)
	PAIR_DELAY=0 PAIR_END=kill_if_died run_pair "$tag" "$1" "${2:-X=}"
	rm -rf "$PAIR_DIR"
}
pair_server() {
	env REGCACHE_OFI_VERBOSE=1 FI_LOG_LEVEL=warn FI_UNIVERSE_SIZE=4 "$3" timeout 300 \
		"$B/ofi_churn_test" server 10.9.0.1 "$PAIR_DIR" --msgs "$MSGS" --mode "$2"
}
pair_client() {
	env REGCACHE_OFI_VERBOSE=1 FI_LOG_LEVEL=warn FI_UNIVERSE_SIZE=4 "$3" timeout 300 \
		"$B/ofi_churn_test" client 10.9.0.2 "$PAIR_DIR" --msgs "$MSGS" --mode "$2"
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
	guest_summary
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
run_kernels ofi "$msgs"
