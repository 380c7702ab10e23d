#!/bin/bash
# The LD_PRELOAD shim (mpi-shim/) on Soft-RoCE inside Debian's kernels: perftest
# (ib_write_bw, ib_read_bw, ib_send_lat) unmodified, without and with the shim
# on both sides (same exit status, comparable numbers, hits in the shim's
# summary), and mpi-shim/tests/shim_rdma_test (hits, fresh registration after
# munmap+mmap), in one process and in two (--pair: client on rxe1 writing
# into a server on rxe0), and in one process with rdma-core's fork protection on (hits, no
# one-use registration; its control: REGCACHE_SHIM_EARLY_DONTFORK=0 makes them one-use). Every process under the shim exports its metrics as a textfile
# (REGCACHE_SHIM_METRICS=textfile=DIR): they must agree with the shim's own
# summary line of the same pid, and shim_rdma_test's must show hits > 0.
# perftest registers each buffer once per process, so its metrics show misses
# and no hits; the output says so. Also regcache-rdmatest (the two-process verbs test,
# churned buffers) with its own cache off, so the shim's cache keeps it correct, with hits,
# and its negative control (REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1 must corrupt).
# Prints "N passed, M failed".
#   vmtest/test-shim.sh [--kernels "6.12 6.1"] [--tests "write_bw read_bw send_lat"]
#   vmtest/test-shim.sh --guest TESTS RDMATEST   (inside guest-rxe.sh; used by the above)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHIMDIR=$ROOT/mpi-shim/build
SHIM=$SHIMDIR/libregcache_shim.so
tests="write_bw read_bw send_lat"
kernels="6.12 6.1"
# shellcheck source=vmtest/pairtest.sh
. "$HERE/pairtest.sh"

# One perftest pair: server on rxe0, client on rxe1 -> 10.9.0.1, two seconds later. $1: tag,
# $2: tool, $3: LD_PRELOAD value or "", rest: extra args. Output in $OUT/$1.* (run_pair).
perf_pair() {
	rm -rf "$OUT/$1.metrics"
	mkdir "$OUT/$1.metrics"
	# perftest's server listens on TCP 18515 for the client's out-of-band exchange.
	PAIR_DELAY=1 PAIR_WAIT_PORT=18515 PAIR_END=grace run_pair "$@"
}
pair_server() {
	local tag=$1 tool=$2 pre=$3
	shift 3
	env ${pre:+LD_PRELOAD=$pre} REGCACHE_SHIM_VERBOSE=1 \
		${pre:+REGCACHE_SHIM_METRICS=textfile=$OUT/$tag.metrics} \
		"$tool" -d rxe0 "$@"
}
pair_client() {
	local tag=$1 tool=$2 pre=$3
	shift 3
	env ${pre:+LD_PRELOAD=$pre} REGCACHE_SHIM_VERBOSE=1 \
		${pre:+REGCACHE_SHIM_METRICS=textfile=$OUT/$tag.metrics} \
		timeout 120 "$tool" -d rxe1 "$@" 10.9.0.1
}

# The number perftest reports: BW average (column 4) or t_avg (column 6).
perf_value() {
	awk -v col="$2" '$1 ~ /^[0-9]+$/ && NF >= col && $2 ~ /^[0-9]+$/ { v = $col } END { print v }' "$1"
}

# The metrics textfiles in $OUT/$1.metrics (one per process under the shim, written at its
# exit) against the shim's summary lines of the same pids in files $3...; $2: the number of
# processes expected. Prints a line per process; sets MHITS to the hits the metrics show.
# Fails when a file is missing or its hits or misses differ from the shim's own count.
metrics_of() {
	local dir=$OUT/$1.metrics want=$2 f pid line rc=0 n=0 hits misses regs shits smisses
	shift 2
	MHITS=0
	for f in "$dir"/regcache-pid*.prom; do
		[ -e "$f" ] || continue
		n=$((n + 1))
		pid=${f##*/regcache-pid}
		pid=${pid%.prom}
		val() { awk -v s="$1" '$1 == s { print $2; exit }' "$f"; }
		hits=$(val 'regcache_lookups_total{result="hit"}')
		misses=$(val 'regcache_lookups_total{result="miss"}')
		regs=$(val regcache_registrations_total)
		line=$(grep -h "^regcache_shim: pid $pid .* hits=" "$@" | head -1)
		shits=$(echo "$line" | sed -n 's/.* hits=\([0-9]*\).*/\1/p')
		smisses=$(echo "$line" | sed -n 's/.* misses=\([0-9]*\).*/\1/p')
		echo "#   pid $pid metrics: hits=${hits:-?} misses=${misses:-?} registrations=${regs:-?} (shim's summary: hits=${shits:-?} misses=${smisses:-?})"
		if [ -n "$hits" ] && [ "$hits" = "$shits" ] && [ "$misses" = "$smisses" ]; then
			MHITS=$((MHITS + hits))
		else
			rc=1
		fi
	done
	[ "$n" = "$want" ] || { echo "#   $n metrics textfiles, expected $want"; rc=1; }
	return $rc
}

guest() {
	OUT=$(mktemp -d)
	export OUT
	echo "# kernel $(uname -r), monitor: $(ls /dev/ummunotify 2>/dev/null || echo none)"
	ibv_devices

	out=$("$SHIMDIR/shim_rdma_test" rxe0 2>&1)
	echo "$out" | sed 's/^/#   plain: /'
	case $out in *" 0 failed"*) ok "shim_rdma_test.plain" ;; *) nok "shim_rdma_test.plain" ;; esac
	mkdir "$OUT/rdma.metrics"
	REGCACHE_SHIM_VERBOSE=1 REGCACHE_SHIM_METRICS=textfile=$OUT/rdma.metrics LD_PRELOAD=$SHIM \
		"$SHIMDIR/shim_rdma_test" rxe0 >"$OUT/rdma.shim" 2>&1
	out=$(cat "$OUT/rdma.shim")
	echo "$out" | sed 's/^/#   shim: /'
	case $out in *" 0 failed"*) ok "shim_rdma_test.shim" ;; *) nok "shim_rdma_test.shim" ;; esac
	if metrics_of rdma 1 "$OUT/rdma.shim" && [ "$MHITS" -gt 0 ]; then
		ok "shim_rdma_test.metrics_hits ($MHITS hits in the metrics textfile)"
	else
		nok "shim_rdma_test.metrics_hits (${MHITS:-0} hits in the metrics)"
	fi

	# rdma-core's fork protection on (RDMAV_FORK_SAFE; RDMAV_USE_MADVISE where rdma-core skips
	# it on a fork-safe kernel): ibv_reg_mr madvises MADV_DONTFORK, which splits the VMA and
	# reports the 2 MiB around it. The shim takes rdma-core's reference before the watch
	# (issue 11), so the same buffer is still served from the cache (the test checks hits);
	# with REGCACHE_SHIM_EARLY_DONTFORK=0 the split strikes each registration being made,
	# which ends one-use: no hits (the control that shows this test can fail).
	for early in 1 0; do
		out=$(RDMAV_FORK_SAFE=1 RDMAV_USE_MADVISE=1 REGCACHE_SHIM_EARLY_DONTFORK=$early \
			REGCACHE_SHIM_VERBOSE=1 LD_PRELOAD=$SHIM "$SHIMDIR/shim_rdma_test" rxe0 2>&1)
		echo "$out" | sed "s/^/#   fork-safe early_dontfork=$early: /"
		unc=$(echo "$out" | sed -n 's/.*regcache_shim: pid.* uncacheable=\([0-9]*\).*/\1/p' | tail -1)
		if [ $early = 1 ]; then
			if [[ $out == *" 0 failed"* ]] && [ "${unc:-1}" = 0 ]; then
				ok "shim_rdma_test.fork_safe (hits, uncacheable=0)"
			else
				nok "shim_rdma_test.fork_safe (uncacheable=${unc:-?})"
			fi
		elif [ "${unc:-0}" -gt 0 ]; then
			ok "shim_rdma_test.fork_safe.control (late DONTFORK: $unc one-use registrations)"
		else
			nok "shim_rdma_test.fork_safe.control (late DONTFORK made no one-use registration: is fork protection on?)"
		fi
	done

	# Two processes: the server on rxe0, the client on rxe1 writing into it, each under the
	# shim with its own metrics; the client's registrations are the hits.
	out=$("$SHIMDIR/shim_rdma_test" --pair rxe0 rxe1 2>&1)
	echo "$out" | sed 's/^/#   pair plain: /'
	case $out in *" 0 failed"*) ok "shim_rdma_test.pair.plain" ;; *) nok "shim_rdma_test.pair.plain" ;; esac
	mkdir "$OUT/pair.metrics"
	REGCACHE_SHIM_VERBOSE=1 REGCACHE_SHIM_METRICS=textfile=$OUT/pair.metrics LD_PRELOAD=$SHIM \
		"$SHIMDIR/shim_rdma_test" --pair rxe0 rxe1 >"$OUT/pair.shim" 2>&1
	sed 's/^/#   pair shim: /' "$OUT/pair.shim"
	case $(cat "$OUT/pair.shim") in
	*" 0 failed"*) ok "shim_rdma_test.pair.shim" ;;
	*) nok "shim_rdma_test.pair.shim" ;;
	esac
	if metrics_of pair 2 "$OUT/pair.shim" && [ "$MHITS" -gt 0 ]; then
		ok "shim_rdma_test.pair.metrics_hits ($MHITS hits in the two processes' metrics textfiles)"
	else
		nok "shim_rdma_test.pair.metrics_hits (${MHITS:-0} hits in the metrics)"
	fi

	# The verbs issue's two-process test (regcache-rdmatest: churned buffers, forks, every
	# transfer checked byte for byte) with its own cache off (--monitor none: ibv_reg_mr and
	# ibv_dereg_mr around every transfer), so the shim's cache is the one that must stay
	# correct, under the buffers' unmaps and remaps at the same addresses.
	mkdir "$OUT/rdmatest.metrics"
	REGCACHE_MONITOR=ummunotify REGCACHE_SHIM_VERBOSE=1 \
		REGCACHE_SHIM_METRICS=textfile=$OUT/rdmatest.metrics LD_PRELOAD=$SHIM \
		"$HERE/guest-rdma.sh" pair "$2" 7480 --monitor none --transfers 2000 \
		>"$OUT/rdmatest.shim" 2>&1
	rc=$?
	grep -E '^(RESULT|server: [0-9]+ transfers|regcache_shim: pid)' "$OUT/rdmatest.shim" |
		sed 's/^/#   rdmatest: /'
	if [ "$rc" = 0 ]; then
		ok "rdmatest.under_shim (2,000 churned transfers verified)"
	else
		nok "rdmatest.under_shim (exit $rc)"
		tail -20 "$OUT/rdmatest.shim" | sed 's/^/#   /'
	fi
	if metrics_of rdmatest 2 "$OUT/rdmatest.shim" && [ "$MHITS" -gt 0 ]; then
		ok "rdmatest.metrics_hits ($MHITS hits in the two processes' metrics textfiles)"
	else
		nok "rdmatest.metrics_hits (${MHITS:-0} hits in the metrics)"
	fi
	# Negative control: the same with the shim's caches told never to check the monitor must
	# see corrupted transfers (or remote access errors) — proof the run above could fail.
	REGCACHE_MONITOR=ummunotify REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1 LD_PRELOAD=$SHIM \
		timeout 300 "$HERE/guest-rdma.sh" pair "$2" 7481 --monitor none --transfers 1000 \
		--fork-every 0 >"$OUT/rdmatest.negative" 2>&1
	rc=$?
	grep -E '^RESULT' "$OUT/rdmatest.negative" | sed 's/^/#   rdmatest negative: /'
	if [ "$rc" != 0 ] && grep -qE '^RESULT .*(corruptions=[1-9]|remote_errors=[1-9])' \
		"$OUT/rdmatest.negative"; then
		ok "rdmatest.negative_control (stale registrations detected, exit $rc)"
	else
		nok "rdmatest.negative_control (exit $rc: no corruption detected)"
		tail -20 "$OUT/rdmatest.negative" | sed 's/^/#   /'
	fi

	for t in $1; do
		case $t in
		write_bw) tool=ib_write_bw args="-n 200 -s 65536" col=4 ;;
		read_bw) tool=ib_read_bw args="-n 200 -s 65536" col=4 ;;
		send_lat) tool=ib_send_lat args="-n 200 -s 64" col=6 ;;
		*) nok "unknown test $t"; continue ;;
		esac
		# shellcheck disable=SC2086
		perf_pair "$t.plain" "$tool" "" $args
		# shellcheck disable=SC2086
		perf_pair "$t.shim" "$tool" "$SHIM" $args
		read -r s0 c0 <"$OUT/$t.plain.rc"
		read -r s1 c1 <"$OUT/$t.shim.rc"
		v0=$(perf_value "$OUT/$t.plain.client" $col)
		v1=$(perf_value "$OUT/$t.shim.client" $col)
		grep -h "regcache_shim" "$OUT/$t.shim.server" "$OUT/$t.shim.client" | sed 's/^/#   /'
		echo "# $tool: without shim exit $s0/$c0 value ${v0:-?}; with shim exit $s1/$c1 value ${v1:-?}"
		if [ "$s1" = "$s0" ] && [ "$c1" = "$c0" ] && [ "$c0" = 0 ] && [ "$s0" = 0 ]; then
			ok "$t.exit"
		else
			nok "$t.exit"
			sed 's/^/#   client: /' "$OUT/$t.shim.client" | tail -15
			sed 's/^/#   server: /' "$OUT/$t.shim.server" | tail -15
		fi
		# Emulated machine: "comparable" means within a factor of 2. rxe under TCG sometimes
		# stalls a whole run (seen once on 6.1: 3994 vs 22.5 us, with and without the shim
		# alike on a rerun), so a pair that is not comparable is measured once more, both
		# sides; a slowdown the shim causes would show again.
		comparable() {
			[ -n "$v0" ] && [ -n "$v1" ] && awk -v a="$v0" -v b="$v1" -v c=$col \
				'BEGIN { r = (c == 4) ? b / a : a / b; exit !(r >= 0.5) }'
		}
		if ! comparable; then
			echo "# $tool: not comparable (${v0:-?} vs ${v1:-?}), measuring again"
			# shellcheck disable=SC2086
			perf_pair "$t.plain" "$tool" "" $args
			# shellcheck disable=SC2086
			perf_pair "$t.shim" "$tool" "$SHIM" $args
			v0=$(perf_value "$OUT/$t.plain.client" $col)
			v1=$(perf_value "$OUT/$t.shim.client" $col)
			echo "# $tool again: without shim ${v0:-?}; with shim ${v1:-?}"
		fi
		if comparable; then
			ok "$t.comparable"
		else
			nok "$t.comparable"
		fi
		if grep -qh "regcache_shim: pid .* enabled .*wrapped=[1-9]" \
			"$OUT/$t.shim.server" "$OUT/$t.shim.client"; then
			ok "$t.through_cache"
		else
			nok "$t.through_cache"
		fi
		# Server and client each export their metrics; they must match the shim's counts.
		if metrics_of "$t.shim" 2 "$OUT/$t.shim.server" "$OUT/$t.shim.client"; then
			ok "$t.metrics"
		else
			nok "$t.metrics"
		fi
		if [ "$MHITS" = 0 ]; then
			echo "# $tool: no hits in the metrics, as expected: perftest registers each buffer once per process (the misses above) and reuses it for every iteration"
		else
			echo "# $tool: $MHITS hits in the metrics"
		fi
	done
	guest_summary
}

if [ "${1:-}" = --guest ]; then
	guest "$2" "$3"
	exit
fi
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--tests) tests=$2; shift 2 ;;
	*) echo "usage: $0 [--kernels K] [--tests T]" >&2; exit 2 ;;
	esac
done

make -s -C "$ROOT/mpi-shim" || { echo "0 passed, 1 failed"; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p regcache-rdmatest) ||
	{ echo "0 passed, 1 failed"; exit 1; }
run_kernels shim "$tests" "$TARGET/release/regcache-rdmatest"
