#!/bin/bash
# One node of vmtest/test-multinode.sh (issue 15), inside its guest, and the per-task wrappers
# that Slurm starts there:
#   guest-multinode.sh node N RUN       node N (1 or 2): its NIC (10.9.1.N) and rxe0, munged
#                                       with the run's key, slurmd (and slurmctld on node 1);
#                                       node 1 then drives the tests through srun, node 2 waits
#                                       for the "done" file in RUN (node 1's, or the host's
#                                       once node 1's guest is over)
#   guest-multinode.sh bw RUN           an srun task: ib_write_bw, task 0 server, task 1 client
#   guest-multinode.sh rank PROG ARGS   an srun task: one MPI rank on rxe0 (the shim preloaded
#                                       when MN_PRELOAD names it)
#   guest-multinode.sh stacks|killrank  srun tasks in a running job: the rank's stacks; SIGKILL
#                                       to the rank
# RUN is the host's per-run directory, shared read-write with both guests at its own path:
# slurm.conf, munge.key and hosts (written by the host), the metrics textfiles and the
# node 1 -> node 2 signals. Results go to $VMTEST_OUT (this guest's --out); the checks print
# ok / not ok and the node's count goes to $VMTEST_OUT/summary.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHIM=$ROOT/mpi-shim/build/libregcache_shim.so
PROG=$ROOT/mpi-shim/build/stacks/mpi_reuse.ompi4

pass=0 fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
nok() { echo "not ok $*"; fail=$((fail + 1)); }

# shellcheck source=scripts/wait-for.sh
. "$ROOT/scripts/wait-for.sh"

now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# ---- per-task wrappers (started by slurmstepd) --------------------------------------------
if [ "${1:-}" = bw ]; then
	# perftest's own TCP handshake on port 18515: the client retries until the server listens.
	if [ "$SLURM_PROCID" = 0 ]; then
		exec ib_write_bw -d rxe0 -x 1 -s 1048576 -n 100
	fi
	for _ in $(seq 120); do
		ib_write_bw -d rxe0 -x 1 -s 1048576 -n 100 10.9.1.1 && exit 0
		sleep 0.5
	done
	exit 1
fi
if [ "${1:-}" = stacks ]; then
	# An srun task in a running job: where this node's rank is (user and kernel stacks).
	read -r pid </tmp/mn-rank.pid 2>/dev/null || exit 0
	kill -0 "$pid" 2>/dev/null || { echo "mn_stacks: $(hostname): rank pid $pid gone"; exit 0; }
	echo "mn_stacks: $(hostname): rank pid $pid: $(tr '\0' ' ' </proc/"$pid"/cmdline)"
	for t in /proc/"$pid"/task/*; do
		echo "mn_stacks: task ${t##*/} $(cat "$t"/comm) wchan $(cat "$t"/wchan)"
		sed 's/^/mn_stacks:   /' "$t"/stack 2>/dev/null
	done
	[ "${MN_GDB:-1}" = 1 ] || exit 0
	timeout 60 gdb -p "$pid" -batch -nx -ex 'thread apply all bt' 2>/dev/null |
		grep -E '^(Thread|#)' | sed 's/^/mn_stacks: /'
	exit 0
fi
if [ "${1:-}" = killrank ]; then
	# An srun task in the kill test's job: SIGKILL to this node's rank.
	read -r pid </tmp/mn-rank.pid
	echo "mn_kill: $(hostname): module refcnt $(cat /sys/module/ummunotify/refcnt), SIGKILL to rank pid $pid"
	kill -KILL "$pid"
	exit
fi
if [ "${1:-}" = rank ]; then
	shift
	# The pid that the kill test signals (exec keeps it).
	echo $$ >/tmp/mn-rank.pid
	echo "mn_rank: rank $SLURM_PROCID node $(hostname) kernel $(uname -r) pid $$" >&2
	export UCX_NET_DEVICES=rxe0:1
	# The shim in the rank only, not in srun nor slurmstepd.
	[ -z "${MN_PRELOAD:-}" ] || export LD_PRELOAD=$MN_PRELOAD
	exec "$@"
fi

# ---- a node -------------------------------------------------------------------------------
[ "${1:-}" = node ] || { echo "usage: $0 node N RUN | bw RUN | rank PROG ARGS" >&2; exit 2; }
N=$2 RUN=$3
ME=node$N
OUT=$VMTEST_OUT
export SLURM_CONF=$RUN/slurm.conf
t_boot=$(now)

setup_node() {
	local ifc
	hostname "$ME"
	# The run's names (node1, node2) for Slurm, PMIx and Open MPI: over the read-only /etc.
	mount --bind "$RUN/hosts" /etc/hosts || return 1
	# The NIC's driver (udev would load it; there is none): virtio_net or e1000.
	modprobe -q virtio_net; modprobe -q e1000
	modprobe rdma_rxe || return 1
	ip link set lo up
	for ifc in /sys/class/net/*; do
		ifc=${ifc##*/}
		[ "$ifc" = lo ] || break
	done
	[ -n "$ifc" ] && [ "$ifc" != lo ] || { echo "# no NIC"; return 1; }
	IFC=$ifc
	ip addr add "10.9.1.$N/24" dev "$IFC" && ip link set "$IFC" up &&
		rdma link add rxe0 type rxe netdev "$IFC" || return 1
	# munged with the run's key (0400, root's, as munged wants it), in /run (tmpfs).
	mkdir -p /run/munge && chmod 0755 /run/munge
	install -m 0400 "$RUN/munge.key" /run/munge/munge.key
	munged --force --key-file=/run/munge/munge.key --log-file=/run/munge/munged.log \
		--pid-file=/run/munge/munged.pid --seed-file=/run/munge/munged.seed || return 1
	mkdir -p /tmp/slurmd /tmp/slurmctld
	# slurmd 22.05 starts its cgroup plugin even with proctrack/linuxproc and task/none:
	# cgroup v2 (cgroup.conf: IgnoreSystemd, there is no systemd in the guest).
	mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup || return 1
	mkdir -p /sys/fs/cgroup/system.slice
	if [ "$N" = 1 ]; then
		slurmctld || return 1
	fi
	slurmd -N "$ME" || return 1
}

# The link and the peer's slurmd: its port answers (the host root has no ping).
peer_up() { timeout 3 bash -c "exec 3<>/dev/tcp/10.9.1.$((3 - N))/6818" 2>/dev/null; }

stop_daemons() {
	local f pid
	for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
		[ -s "$f" ] || continue
		read -r pid <"$f"
		kill "$pid" 2>/dev/null
		wait_for 30 sh -c "! kill -0 $pid 2>/dev/null"
	done
}

if setup_node; then
	ok "$ME.setup ($(uname -r), $IFC 10.9.1.$N, rxe0, munged, slurmd$([ "$N" = 1 ] && echo ", slurmctld"))"
else
	nok "$ME.setup"
	cat /run/munge/munged.log "$OUT"/slurm*.log 2>/dev/null | tail -20 | sed 's/^/#   /'
fi
if wait_for 120 peer_up; then
	ok "$ME.link (slurmd of 10.9.1.$((3 - N)) answers, $(since "$t_boot") s after setup began)"
else
	nok "$ME.link (no answer from slurmd on 10.9.1.$((3 - N)) in 120 s)"
fi
echo "$(since "$t_boot")" >"$OUT/setup.time"

if [ "$N" = 2 ]; then
	# Node 2 serves until node 1 is done (node 1 is bounded by its guest's timeout).
	echo "# $ME: serving until node 1 is done"
	wait_for "${MN_NODE2_WAIT:-3000}" test -e "$RUN/done" || nok "$ME.done_signal (none from node 1)"
	rc=$(cat /sys/module/ummunotify/refcnt 2>/dev/null)
	stop_daemons
	[ "$rc" = 0 ] && ok "$ME.module_refcnt_zero" || nok "$ME.module_refcnt_zero (refcnt ${rc:-?})"
	echo "$pass $fail" >"$OUT/summary"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
fi

# ---- node 1: the tests, through Slurm ------------------------------------------------------
MSGS=${MN_MSGS:-40}
# Message sizes 64 KiB, 256 KiB, 1 MiB (all rendezvous, so both sides register): 4 MiB
# messages would quadruple the data at rxe's few MB/s across the two guests, and test nothing
# the smaller ones do not.
MAX=${MN_MAX_BYTES:-1048576}
finish_node1() {
	: >"$RUN/done"
	stop_daemons
	echo "$pass $fail" >"$OUT/summary"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}
phase() { echo "$1 $(since "$2")" >>"$OUT/phases"; }

both_idle() {
	[ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$')" = 2 ]
}
t=$(now)
if wait_for 180 both_idle; then
	ok "slurm.nodes_idle ($(sinfo -h -N -o '%N:%t' | tr '\n' ' ')in $(since "$t") s)"
else
	nok "slurm.nodes_idle ($(sinfo -h -N -o '%N:%t' 2>&1 | tr '\n' ' '))"
	tail -20 "$OUT/slurmctld.log" 2>/dev/null | sed 's/^/#   /'
	finish_node1
fi
echo "# srun --mpi=list: $(srun --mpi=list 2>&1 | grep -vi 'MPI plugin types' | tr -s ' \n' ' ')"

# -- does Slurm's PMIx fence wait for both ranks? (a fact for the Finalize hang; not a check)
timeout 120 srun -N2 -n2 --ntasks-per-node=1 --mpi=pmix "$ROOT/mpi-shim/build/stacks/pmix-fence" \
	>"$OUT/pmix-fence.log" 2>&1
sed 's/^/#   /' "$OUT/pmix-fence.log"
w=$(awk '/^pmix_fence: rank 1 round 0/ { print $8 } /^pmix_fence: rank 0 round 1/ { print $8 }' \
	"$OUT/pmix-fence.log" | sort -n | tail -1)
echo "# Slurm PMIx fence: the rank not sleeping waited at most ${w:-?} s for the one that slept 5 s" \
	"($(awk -v w="${w:-0}" 'BEGIN { print (w >= 4 ? "a barrier" : "not a barrier") }'))"

# -- ib_write_bw node1 <- node2 (the link's reference speed)
t=$(now)
timeout 300 srun -N2 -n2 --ntasks-per-node=1 "$0" bw "$RUN" >"$OUT/bw.log" 2>&1
rc=$?
phase bw "$t"
bw=$(awk '$1 == 1048576 && NF >= 5 { print $4 }' "$OUT/bw.log" | head -1)
if [ "$rc" = 0 ] && [ -n "$bw" ]; then
	ok "ib_write_bw node2 -> node1 over rxe ($bw MB/s average, 100 x 1 MiB, $(since "$t") s)"
else
	nok "ib_write_bw (srun exit $rc)"
	tail -15 "$OUT/bw.log" | sed 's/^/#   /'
fi

# -- mpi_reuse, one rank per node, Open MPI 4.1 + UCX 1.13 under the shim
# UCX 1.13 drops rxe's UD packets without UCX_UD_VERBS_ETH_DGID_CHECK=n; no shared memory.
export UCX_TLS=rc_verbs,ud_verbs UCX_UD_VERBS_ETH_DGID_CHECK=n
export OMPI_MCA_pml=ucx OMPI_MCA_osc=ucx OMPI_MCA_btl='^vader,tcp,openib,uct,ofi'
# Under the shim, UCX's and Open MPI's own memory hooks off (the shim feeds UCX's cache).
HOOKS_OFF=(UCX_MEM_MMAP_HOOK_MODE=none OMPI_MCA_opal_common_ucx_opal_mem_hooks=0)
# One MPI step: mpi TAG [NAME=VALUE...]; output in $OUT/TAG.log, srun's status in RC, the
# metrics textfiles in $RUN/metrics/TAG (rewritten every second, so that a rank
# stopped in MPI_Finalize leaves its counts). Once both ranks have printed their verdict,
# MPI_Finalize and the exit get FINALIZE_GRACE seconds (20): past that, both ranks' stacks go
# to $OUT/TAG.stacks (gdb's for the first such run only: it is slow under TCG), the job is
# cancelled and $OUT/TAG.hung is created; the run's verdict is then the ranks' own. Seen with
# and without the shim: Open MPI 4.1.4's pml ucx disconnects its endpoints in MPI_Finalize
# (opal_common_ucx_del_procs_nofence) and then relies on a PMIx fence, which Slurm 22.05's
# mpi/pmix_v4 returns at once (the pmix_fence probe before the tests): one rank leaves while
# the other still waits for its ucp_disconnect_nb to the peer that is gone.
mpi() {
	local tag=$1 t0 pid i
	shift
	mkdir -p "$RUN/metrics/$tag"
	t0=$(now)
	srun_bg "$tag" "${MPI_MSGS:-$MSGS}" "textfile=$RUN/metrics/$tag,interval=1" "$@"
	pid=$SRUN_PID
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$(grep -c '^mpi_reuse: rank [01] msgs=' "$OUT/$tag.log")" = 2 ]; then
			for ((i = 0; i < 2 * ${FINALIZE_GRACE:-20}; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.5
			done
			if kill -0 "$pid" 2>/dev/null; then
				echo "# $tag: MPI_Finalize did not return ${FINALIZE_GRACE:-20} s after both verdicts: stacks, then scancel"
				stacks "$tag"
				: >"$OUT/$tag.hung"
				scancel "$(job_of "$tag")"
			fi
			break
		fi
		sleep 0.5
	done
	wait "$pid"
	RC=$?
	phase "$tag" "$t0"
	echo "# $tag: srun exit $RC in $(since "$t0") s"
	grep -E "^mpi_reuse: rank|^regcache_shim: .*(bridge|hits=)" "$OUT/$tag.log" | sed 's/^/#   /'
}
# srun_bg TAG MSGS METRICS_SPEC [NAME=VALUE...]: the two-rank step in the background (SRUN_PID).
srun_bg() {
	local tag=$1 msgs=$2 spec=$3
	shift 3
	env MN_PRELOAD="${MN_PRELOAD-$SHIM}" REGCACHE_MONITOR=ummunotify REGCACHE_SHIM_VERBOSE=1 \
		REGCACHE_SHIM_METRICS="$spec" "$@" \
		timeout "${MN_RUN_TIMEOUT:-600}" srun -N2 -n2 --ntasks-per-node=1 --mpi=pmix \
		--kill-on-bad-exit=1 --job-name="$tag" "$0" rank "$PROG" --msgs "$msgs" --max "$MAX" \
		>"$OUT/$tag.log" 2>&1 &
	SRUN_PID=$!
}
job_of() { squeue -h -n "$1" -o %i | head -1; }
# Both ranks' stacks (one overlapping task per node in the job).
stacks() {
	local j
	j=$(job_of "$1")
	[ -n "$j" ] || return 0
	MN_GDB=$([ -e /tmp/mn-gdb-done ] && echo 0 || echo 1) timeout 120 srun --jobid="$j" \
		--overlap -N2 -n2 --ntasks-per-node=1 "$0" stacks >"$OUT/$1.stacks" 2>&1
	: >/tmp/mn-gdb-done
	# The rank(s) still there, and where MPI_Finalize waits.
	grep -E 'mn_stacks: (node[12]: )|(#[0-9]+ .*(ompi_|opal_|ucp_|main))' "$OUT/$1.stacks" |
		head -12 | sed 's/^/#   /'
}
bad_of() {
	sed -n 's/^mpi_reuse: rank [01] .* total_bad=\([0-9]*\).*/\1/p' "$OUT/$1.log" | sort -n | tail -1
}
ucx_hits() {
	cat "$RUN/metrics/$1"/*.prom 2>/dev/null | awk '{ n = $1; sub(/\{.*/, "", n) }
		n == "regcache_shim_ucx_cache_hits_total" { h += $2 } END { print h + 0 }'
}

# Both ranks printed a clean verdict for all messages (srun's status aside when Finalize hung).
intact() {
	local tag=$1 msgs=$2 bad n
	bad=$(bad_of "$tag")
	n=$(grep -c "^mpi_reuse: rank [01] msgs=$msgs .* bad=0 " "$OUT/$tag.log")
	if [ "$bad" = 0 ] && [ "$n" = 2 ] && { [ "$RC" = 0 ] || [ -e "$OUT/$tag.hung" ]; }; then
		ok "$tag.every_word_intact ($msgs messages, total_bad=0$([ -e "$OUT/$tag.hung" ] && echo ", Finalize hung"))"
	else
		nok "$tag.every_word_intact (srun exit $RC, total_bad=${bad:-?}, $n of 2 ranks clean)"
		grep -vE '^$' "$OUT/$tag.log" | tail -15 | sed 's/^/#   /'
	fi
}
# The textfiles' value of SERIES per node: "node1=V node2=V".
per_node() {
	cat "$RUN/metrics/$1"/*.prom 2>/dev/null | awk -v s="$2" '{ n = $1; sub(/\{.*/, "", n) }
		n == s { match($1, /node="[^"]*"/); print substr($1, RSTART + 6, RLENGTH - 7) "=" $2 }' |
		sort | tr '\n' ' '
}

# -- reference: the same program without the shim (UCX's own hooks and cache as shipped)
MN_PRELOAD='' MPI_MSGS=${MN_PLAIN_MSGS:-10} mpi plain
intact plain "${MN_PLAIN_MSGS:-10}"

mpi shim "${HOOKS_OFF[@]}"
intact shim "$MSGS"
# Where each rank ran (the wrapper's line): one per node, so one per kernel.
grep '^mn_rank:' "$OUT/shim.log" | sed 's/^/#   /'
n=$(grep '^mn_rank:' "$OUT/shim.log" | awk '{ print $5 }' | sort -u | wc -l)
[ "$n" = 2 ] && ok "shim.one_rank_per_node (2 nodes, 2 kernels)" ||
	nok "shim.one_rank_per_node ($n distinct nodes)"
# The bridge in both ranks: attached at start (verbose line), active in the textfiles (1) and,
# for ranks that left MPI_Finalize, in the exit line.
a=$(grep -c '^regcache_shim: UCX bridge: .* external, fed by the shim' "$OUT/shim.log")
e=$(grep -cE "^regcache_shim: pid [0-9]+ ucx bridge active " "$OUT/shim.log")
st=$(per_node shim regcache_shim_ucx_bridge_state)
if [ "$a" = 2 ] && [ "$st" = "node1=1 node2=1 " ]; then
	ok "shim.ucx_bridge_active (attached in 2 ranks, state ${st% }, $e exit lines)"
else
	nok "shim.ucx_bridge_active (attached in $a ranks, state ${st:-none}, $e exit lines)"
fi
h=$(ucx_hits shim)
[ "$h" -gt 0 ] && ok "shim.ucx_cache_hits ($h: $(per_node shim regcache_shim_ucx_cache_hits_total))" ||
	nok "shim.ucx_cache_hits ($h)"

MPI_MSGS=${MN_NEG_MSGS:-20} mpi no_forward "${HOOKS_OFF[@]}" REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1
bad=$(bad_of no_forward)
if [ -n "$bad" ] && [ "$bad" -gt 0 ]; then
	ok "no_forward.stale_detected (total_bad=$bad)"
else
	nok "no_forward.stale_detected (total_bad=${bad:-?}, srun exit $RC)"
fi

# -- node2's rank killed mid-run: Slurm cancels the step (--kill-on-bad-exit), node1's rank
# must be gone in bounded time, both nodes' module references dropped.
mid_run() {
	local f n=0
	for f in "$RUN"/metrics/kill/regcache-rank[01]-*.prom; do
		[ -e "$f" ] || continue
		awk '$1 ~ /^regcache_registrations_total/ && $2 > 0 { f = 1 } END { exit !f }' "$f" &&
			n=$((n + 1))
	done
	[ "$n" = 2 ]
}
refcnt_zero() { [ "$(cat /sys/module/ummunotify/refcnt)" = 0 ]; }
kill_test() {
	local t0 tk pid j rp r1 r2
	mkdir -p "$RUN/metrics/kill"
	t0=$(now)
	srun_bg kill 100000 "textfile=$RUN/metrics/kill,interval=1" "${HOOKS_OFF[@]}"
	pid=$SRUN_PID
	if ! wait_for 300 mid_run; then
		nok "kill.mid_run (both ranks did not report registrations within 300 s)"
		scancel "$(job_of kill)" 2>/dev/null
		wait "$pid"
		return
	fi
	r1=$(cat /sys/module/ummunotify/refcnt)
	j=$(job_of kill)
	tk=$(now)
	timeout 60 srun --jobid="$j" --overlap -N1 -n1 -w node2 "$0" killrank >"$OUT/kill.killer" 2>&1
	sed 's/^/#   /' "$OUT/kill.killer"
	if wait_for 120 sh -c "! kill -0 $pid 2>/dev/null"; then
		ok "kill.step_cancelled (srun returned $(since "$tk") s after node2's rank was killed)"
	else
		nok "kill.step_cancelled (srun still running 120 s after the kill)"
		stacks kill
		scancel "$j"
	fi
	wait "$pid"
	echo "# kill: srun exit $?; $(grep -c '^mpi_reuse: rank' "$OUT/kill.log") verdict lines (0 expected)"
	grep -E '^srun: ' "$OUT/kill.log" | head -6 | sed 's/^/#   /'
	read -r rp </tmp/mn-rank.pid
	if wait_for 30 sh -c "! kill -0 $rp 2>/dev/null"; then
		ok "kill.node1_rank_gone (pid $rp)"
	else
		nok "kill.node1_rank_gone (pid $rp still there)"
	fi
	if wait_for 60 refcnt_zero; then
		ok "kill.node1_module_refs_dropped (refcnt $r1 -> 0)"
	else
		nok "kill.node1_module_refs_dropped (refcnt $(cat /sys/module/ummunotify/refcnt))"
	fi
	r2=$(timeout 120 srun -N1 -n1 -w node2 cat /sys/module/ummunotify/refcnt 2>&1)
	if [ "$r2" = 0 ]; then
		ok "kill.node2_module_refs_dropped (refcnt 0, read through srun)"
	else
		nok "kill.node2_module_refs_dropped (refcnt ${r2:-?})"
	fi
	phase kill "$t0"
}
kill_test

finish_node1
