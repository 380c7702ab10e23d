#!/bin/bash
# The UCX bridge (mpi-shim/ucx_bridge.c: UCX's registration cache fed by ummunotify) with Open
# MPI over Soft-RoCE inside Debian's kernels. mpi-shim/build/ucx_mpi_churn sends 1 MiB
# (rendezvous: UCX registers both sides) messages between two ranks, pml ucx over rc_verbs,
# from and into buffers that are unmapped and mapped again at the same address before every
# second message, and checks every received word. UCX is told to rely on external events only:
# UCX_MEM_MMAP_HOOK_MODE=none (UCX 1.13 would otherwise patch mmap/munmap at load) and
# --mca opal_common_ucx_opal_mem_hooks 0 (Open MPI 4.1 would otherwise feed ucm_vm_munmap from
# its own hooks), so the shim is the only one telling UCX. Runs:
#   plain       Open MPI + UCX as installed (their own hooks), no shim, for reference
#   bridge      the shim with the bridge, REGCACHE_MONITOR=ummunotify: every message intact
#   off         the shim with REGCACHE_SHIM_UCX=0, hooks still off: UCX cannot cache, intact
#   no_forward  negative control: external events declared, nothing forwarded: must corrupt
#   no_sync     the bridge without the drain before ucs_rcache_get: must corrupt (why it exists)
# Prints "N passed, M failed". Only 6.12 by default: on 6.1 rxe logs "Failed sending ACK" about
# once a second and every run (with or without the shim) takes ~80 s instead of ~12 s; it
# passes there too (--kernels "6.12 6.1").
#   vmtest/test-ucx.sh [--kernels "6.12 6.1"] [--msgs N]
#                      [--runs "plain bridge off no_forward no_sync"]
#                      [--keep]   (keep the logs, also when everything passed)
#   vmtest/test-ucx.sh --guest MSGS RUNS     (inside guest-rxe.sh; used by the above)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$ROOT/mpi-shim/build
kernels="6.12"
msgs=64
runs="plain bridge off no_forward no_sync"
keep=0

# shellcheck source=vmtest/pairtest.sh
. "$HERE/pairtest.sh"

# One two-rank run. $1: tag, rest: NAME=VALUE for the ranks. Output in $OUT/$1.log, exit
# status in $OUT/$1.rc, seconds in $OUT/$1.time. Tag "plain": Open MPI and UCX as installed
# (UCX's and Open MPI's own memory hooks, no shim), for reference.
mpi() {
	local tag=$1 x=() v t0 rc
	shift
	if [ "$tag" != plain ]; then
		x=(--mca opal_common_ucx_opal_mem_hooks 0 -x UCX_MEM_MMAP_HOOK_MODE=none
			-x REGCACHE_SHIM_VERBOSE=1 -x REGCACHE_MONITOR=ummunotify
			-x REGCACHE_TEST_PRELOAD="$B/libregcache_shim.so")
	fi
	for v in "$@"; do x+=(-x "$v"); done
	t0=$(date +%s)
	timeout 600 mpirun --allow-run-as-root --oversubscribe -np 2 \
		--mca pml ucx --mca osc ucx --mca btl '^vader,tcp,openib,uct,ofi' \
		-x UCX_TLS=rc_verbs,ud_verbs -x UCX_UD_VERBS_ETH_DGID_CHECK=n \
		"${x[@]}" "$HERE/ucx-rank.sh" "$B/ucx_mpi_churn" --msgs "$MSGS" \
		>"$OUT/$tag.log" 2>&1
	rc=$?
	echo $rc >"$OUT/$tag.rc"
	echo $(($(date +%s) - t0)) >"$OUT/$tag.time"
	echo "# $tag: exit $rc in $(cat "$OUT/$tag.time") s"
	grep -E "^ucx_mpi_churn|^regcache_shim" "$OUT/$tag.log" | grep -v "message [0-9]" |
		sed "s/^/#   $tag: /"
	grep -E "message [0-9]+:" "$OUT/$tag.log" | head -3 | sed "s/^/#   $tag: /"
}

# bad=N of a run, or "" when the program did not report.
bad_of() { sed -n 's/^ucx_mpi_churn: .* bad=\([0-9]*\) .*/\1/p' "$OUT/$1.log" | head -1; }

# Per rank "gets regs" from the bridge's summary lines.
ucx_hits() {
	sed -n 's/.*ucx bridge active .* rcache_gets=\([0-9]*\) .* registered_in_get=\([0-9]*\) .*/\1 \2/p' \
		"$OUT/$1.log"
}

guest() {
	OUT=$(mktemp -d)
	MSGS=$1
	RUNS=$2
	hostname testvm # Open MPI rejects the guest's "(none)"
	echo "# kernel $(uname -r), monitor: $(ls /dev/ummunotify 2>/dev/null || echo none)," \
		"$(mpirun --version 2>/dev/null | head -1), UCX $(ucx_info -v 2>/dev/null |
			sed -n 's/^# Version //p' | head -1)"

	case " $RUNS " in *" plain "*) run_plain ;; esac
	case " $RUNS " in *" bridge "*) run_bridge ;; esac
	case " $RUNS " in *" off "*) run_off ;; esac
	case " $RUNS " in *" no_forward "*) run_no_forward ;; esac
	case " $RUNS " in *" no_sync "*) run_no_sync ;; esac
	cp "$OUT"/*.log "$VMTEST_OUT"/ 2>/dev/null
	guest_summary
}

# What UCX itself logged in run TAG about FILTER (a regex), counted, the LINES most frequent;
# an optional sed expression further normalises the lines.
ucx_excerpt() {
	grep -E "UCX +(INFO|DEBUG|WARN)" "$OUT/$1.log" | grep -iE "$2" |
		sed -E "s/^\[[0-9.]+\] \[[^]]*\] +//${4:+; $4}" | sort | uniq -c | sort -rn |
		head -"$3" | sed 's/^/#   UCX: /'
}

run_plain() {
	# Reference: no shim, UCX's and Open MPI's own hooks keep UCX's cache correct.
	mpi plain UCX_MEM_LOG_LEVEL=debug
	ucx_excerpt plain "external|installed events|installing" 12 's/= 0x[0-9a-f]+ for/for/'
	read -r rc <"$OUT/plain.rc"
	if [ "$rc" = 0 ] && [ "$(bad_of plain)" = 0 ]; then
		ok "plain.every_message_intact"
	else
		nok "plain.every_message_intact (exit $rc, bad=$(bad_of plain))"
	fi
}

run_bridge() {
	# The bridge, with what UCX says about its memory events and transports.
	mpi bridge UCX_LOG_LEVEL=info UCX_MEM_LOG_LEVEL=debug
	ucx_excerpt bridge "external|hook|handler|events|rcache|ep_cfg|VM_UNMAP" 25
	grep -iE "warn|error|unable" "$OUT/bridge.log" | grep -v "^regcache_shim" | sort -u |
		head -10 | sed 's/^/#   warning: /'
	read -r rc <"$OUT/bridge.rc"
	if [ "$rc" = 0 ] && [ "$(bad_of bridge)" = 0 ] &&
		grep -q "^ucx_mpi_churn: msgs=$MSGS " "$OUT/bridge.log"; then
		ok "bridge.every_message_intact"
	else
		nok "bridge.every_message_intact (exit $rc, bad=$(bad_of bridge))"
		tail -30 "$OUT/bridge.log" | sed 's/^/#   /'
	fi
	if grep -qE "remapped_send=[1-9][0-9]* remapped_recv=[1-9]" "$OUT/bridge.log"; then
		ok "bridge.addresses_reused"
	else
		nok "bridge.addresses_reused"
	fi
	if [ "$(grep -c 'ucx bridge active (UCX 1.13' "$OUT/bridge.log")" = 2 ] &&
		[ "$(grep -cE 'ucx bridge active .* forwarded=[1-9]' "$OUT/bridge.log")" = 2 ]; then
		ok "bridge.active_and_forwarding"
	else
		nok "bridge.active_and_forwarding"
	fi
	# UCX's cache was used (hits: gets that registered nothing) and invalidated by us
	# (drains before ucs_rcache_get).
	hits=$(ucx_hits bridge | awk '{ h += $1 - $2 } END { print h + 0 }')
	if [ "$hits" -gt 0 ] && grep -qE "drained_before_get=[1-9]" "$OUT/bridge.log"; then
		ok "bridge.ucx_rcache_hits ($hits)"
	else
		nok "bridge.ucx_rcache_hits ($hits)"
	fi
	# Nobody else told UCX: the event is external and UCX patched nothing.
	if grep -q "set external events: 0x20000" "$OUT/bridge.log" &&
		! grep -q "installing .* hook for" "$OUT/bridge.log"; then
		ok "bridge.no_ucx_hooks"
	else
		nok "bridge.no_ucx_hooks"
	fi
	if grep -q "rc_verbs/rxe" "$OUT/bridge.log"; then
		ok "bridge.over_rc_verbs"
	else
		nok "bridge.over_rc_verbs"
	fi
}

run_off() {
	# REGCACHE_SHIM_UCX=0 with UCX's and Open MPI's hooks still off: nobody can feed UCX's
	# cache, so UCX must not cache (it cannot subscribe to VM_UNMAPPED) and stay correct.
	mpi off REGCACHE_SHIM_UCX=0 UCX_LOG_LEVEL=info UCX_MEM_LOG_LEVEL=debug
	ucx_excerpt off "external|hook|rcache|reg_methods|events" 8
	read -r rc <"$OUT/off.rc"
	if [ "$rc" = 0 ] && [ "$(bad_of off)" = 0 ] &&
		[ "$(grep -c 'ucx bridge off' "$OUT/off.log")" = 2 ]; then
		ok "off.every_message_intact"
	else
		nok "off.every_message_intact (exit $rc, bad=$(bad_of off))"
	fi
}

# A negative control: TAG run with the test-only switch VAR=1 must see corrupted messages,
# or the runs above would prove nothing.
run_stale() {
	mpi "$1" "$2=1"
	bad=$(bad_of "$1")
	if [ -n "$bad" ] && [ "$bad" -gt 0 ]; then
		ok "$1.stale_detected (bad=$bad)"
	else
		nok "$1.stale_detected (bad=${bad:-?})"
	fi
}

# UCX relies on external events, nobody forwards them.
run_no_forward() { run_stale no_forward REGCACHE_SHIM_UCX_DANGER_NO_FORWARD; }
# The drain before ucs_rcache_get is what makes UCX hits safe: without it, stale.
run_no_sync() { run_stale no_sync REGCACHE_SHIM_UCX_DANGER_NO_SYNC; }

if [ "${1:-}" = --guest ]; then
	guest "$2" "${3:-plain bridge off no_forward no_sync}"
	exit
fi
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--msgs) msgs=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--kernels K] [--msgs N] [--runs R] [--keep]" >&2; exit 2 ;;
	esac
done

for tool in mpicc mpirun ucx_info; do
	command -v $tool >/dev/null ||
		{ echo "$tool missing: run scripts/deps.sh (openmpi-bin libopenmpi-dev ucx-utils)"; \
			echo "0 passed, 1 failed"; exit 1; }
done
{ make -s -C "$ROOT/mpi-shim" && make -s -C "$ROOT/mpi-shim" ucx; } ||
	{ echo "0 passed, 1 failed"; exit 1; }
RUN_TIMEOUT=1500 KEEP_LOGS=$keep run_kernels ucx "$msgs" "$runs"
