#!/bin/bash
# Two nodes, two kernels, a real launcher (issue 15): two guests at once, node1 on Debian's 6.12
# and node2 on 6.1 (--kernels to change), each with one NIC on one point-to-point link (qemu's
# socket netdev over UDP on the host's loopback: the guests' only network) and one Soft-RoCE
# device (rxe0) on it. The NIC is an e1000 (MN_NIC_MODEL to change): with virtio-net-pci, 6.12
# panicked once in net_rx_action (NULL list pointer, from rxe's ACK transmit in its work queue,
# softirq run at local_bh_enable) during ib_write_bw; e1000 has not.
# Slurm from Debian (slurmctld on node1, slurmd on both, munge with a key made here; every
# config file in the per-run directory, shared read-write with both guests at its path)
# launches the ranks with `srun --mpi=pmix` (Debian's Open MPI 4.1.4 has only PMIx clients:
# ext3x on libpmix2 4.2; no PMI-2). Tests (vmtest/guest-multinode.sh):
#   - ib_write_bw node2 -> node1 over rxe (the link's reference speed, MB/s);
#   - mpi-shim/tests/mpi_reuse.c, Open MPI 4.1 + UCX 1.13 (pml ucx, rc_verbs + ud_verbs), one
#     rank per node, 64 KiB-1 MiB messages (MN_MAX_BYTES): without the shim (reference,
#     MN_PLAIN_MSGS=10 messages), then under the shim (REGCACHE_MONITOR=ummunotify, UCX's and
#     Open MPI's memory hooks off): every word intact, UCX bridge active in both ranks, UCX
#     cache hits > 0; its negative control (REGCACHE_SHIM_UCX_DANGER_NO_FORWARD=1) must
#     corrupt;
#   - each rank writes its metrics textfile into the shared directory; on the host, one
#     node_exporter (textfile collector only) reads them and a Prometheus scrapes it: the
#     per-node series must be there with node, rank and job_id labels;
#   - whether Slurm's PMIx fence waits for both ranks (vmtest/pmix-fence.c; a "#" line: it does
#     not, which is why Open MPI 4.1 + UCX's MPI_Finalize can hang under srun, see
#     guest-multinode.sh's mpi());
#   - one rank (node2's) is killed mid-run (SIGKILL); Slurm cancels the step: node1's rank
#     must be gone within a bounded time and both nodes' module references dropped (and
#     run.sh's rmmod after the command must succeed on both: else exit 98).
# Prints ok / not ok lines and "N passed, M failed"; the wall time of each phase on the host.
#   vmtest/test-multinode.sh [--kernels "6.12 6.1"] [--msgs N] [--keep]
# (--msgs: the shim run's messages, 40; the negative control's are MN_NEG_MSGS=20.)
# Both guests get one vCPU. One run at a time: the lock /tmp/regcache-vmtest-multinode.lock
# (each guest's own run.sh lock is private to the run, so the two can start together).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
B=$ROOT/mpi-shim/build
kernels="6.12 6.1"
msgs=40
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=$2; shift 2 ;;
	--msgs) msgs=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--kernels \"K1 K2\"] [--msgs N] [--keep]" >&2; exit 2 ;;
	esac
done
read -r k1 k2 <<<"$kernels"
[ -n "${k2:-}" ] || { echo "--kernels needs two kernels" >&2; exit 2; }

pass=0 fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
nok() { echo "not ok $*"; fail=$((fail + 1)); }
finish() {
	echo "# wall time: $(($(date +%s) - T0)) s"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}
T0=$(date +%s)

exec 7>/tmp/regcache-vmtest-multinode.lock
flock 7

# ---- build ---------------------------------------------------------------------------------
for c in srun slurmctld slurmd munged mpicc ib_write_bw prometheus prometheus-node-exporter; do
	command -v "$c" >/dev/null || { nok "prerequisites ($c missing: scripts/deps.sh, vmtest/setup.sh)"; finish; }
done
make -s -C "$ROOT/mpi-shim" >/dev/null || { nok "make -C mpi-shim"; finish; }
mkdir -p "$B/stacks"
src=$ROOT/mpi-shim/tests/mpi_reuse.c
if [ ! -x "$B/stacks/mpi_reuse.ompi4" ] || [ "$src" -nt "$B/stacks/mpi_reuse.ompi4" ]; then
	mpicc -O2 -Wall -Wextra -o "$B/stacks/mpi_reuse.ompi4" "$src" || { nok "mpicc mpi_reuse"; finish; }
fi
src=$HERE/pmix-fence.c
if [ ! -x "$B/stacks/pmix-fence" ] || [ "$src" -nt "$B/stacks/pmix-fence" ]; then
	# shellcheck disable=SC2046
	cc -O2 -Wall -Wextra -o "$B/stacks/pmix-fence" "$src" $(pkg-config --cflags --libs pmix) ||
		{ nok "cc pmix-fence (libpmix-dev)"; finish; }
fi

# ---- the run's directory: Slurm's and munge's configuration, hosts, metrics ----------------
RUN=$(mktemp -d /tmp/regcache-multinode.XXXXXX)
chmod 755 "$RUN"
pids=()
cleanup() {
	local p
	for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null; done
	if [ "$keep" = 0 ] && [ "$fail" = 0 ]; then rm -rf "$RUN"; else echo "# logs: $RUN"; fi
}
trap cleanup EXIT
head -c 1024 /dev/urandom >"$RUN/munge.key"
chmod 600 "$RUN/munge.key"
printf '127.0.0.1 localhost\n10.9.1.1 node1\n10.9.1.2 node2\n' >"$RUN/hosts"
cat >"$RUN/slurm.conf" <<'EOF'
# Generated by vmtest/test-multinode.sh for one run.
ClusterName=regcache
SlurmctldHost=node1(10.9.1.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=/run/munge/munge.socket.2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/tmp/slurmctld
SlurmdSpoolDir=/tmp/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/run/vmtest/slurmctld.log
SlurmdLogFile=/run/vmtest/slurmd.log
SlurmctldTimeout=60
SlurmdTimeout=120
KillWait=5
MessageTimeout=30
NodeName=node1 NodeAddr=10.9.1.1 CPUs=1 State=UNKNOWN
NodeName=node2 NodeAddr=10.9.1.2 CPUs=1 State=UNKNOWN
PartitionName=mn Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
EOF

cat >"$RUN/cgroup.conf" <<'EOF'
# slurmd needs its cgroup plugin to start; no systemd in the guests.
CgroupPlugin=cgroup/v2
IgnoreSystemd=yes
EOF

# ---- the two guests on one link --------------------------------------------------------------
udp_port() {
	python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
p1=$(udp_port) p2=$(udp_port)
start_node() { # N KERNEL LOCALPORT PEERPORT
	mkdir -p "$RUN/node$1"
	VMTEST_LOCK=$RUN/node$1.lock "$HERE/run.sh" --kernel "$2" --smp 1 --mem 2048 \
		--timeout "${MN_TIMEOUT:-2400}" --out "$RUN/node$1" --rw "$RUN" --quiet \
		--netdev "socket,udp=127.0.0.1:$4,localaddr=127.0.0.1:$3" --mac "52:54:00:00:09:0$1" \
		--nic-model "${MN_NIC_MODEL:-e1000}" \
		-e "MN_MSGS=$msgs" -- "$HERE/guest-multinode.sh" node "$1" "$RUN" \
		>"$RUN/node$1.out" 2>&1
	echo $? >"$RUN/node$1.rc"
	# Node 2 serves until this file exists: node 1's guest is over, whatever its end.
	[ "$1" = 1 ] && : >"$RUN/done"
}
t=$(date +%s)
start_node 1 "$k1" "$p1" "$p2" &
pids+=($!)
start_node 2 "$k2" "$p2" "$p1" &
pids+=($!)
wait "${pids[@]}"
pids=()
echo "# guests: $(($(date +%s) - t)) s (node1 $k1, node2 $k2, 1 vCPU each)"
for n in 1 2; do
	grep -E '^(ok|not ok|#)' "$RUN/node$n.out" | sed "s/^#/# node$n:/"
	p=0 f=0
	[ -s "$RUN/node$n/summary" ] && read -r p f <"$RUN/node$n/summary"
	pass=$((pass + p)) fail=$((fail + f))
	read -r rc <"$RUN/node$n.rc"
	case $rc in
	0|1) ok "node$n.kernel_log_clean_and_module_unloaded (run.sh exit $rc)" ;;
	98) nok "node$n.module_unloaded (rmmod ummunotify failed after the command)" ;;
	*) nok "node$n.kernel_log_clean (run.sh exit $rc)"
	   grep -E '^vmtest:' "$RUN/node$n.out" | tail -5 | sed 's/^/#   /' ;;
	esac
	[ -s "$RUN/node$n/summary" ] || { nok "node$n.reported (no summary)"; tail -20 "$RUN/node$n.out" | sed 's/^/#   /'; }
done
[ -s "$RUN/node1/phases" ] && echo "# node1 phases (s): $(tr '\n' ' ' <"$RUN/node1/phases")"

# ---- Prometheus on the host: node_exporter's textfile collector over the ranks' files ------
t=$(date +%s)
mdir=$RUN/metrics/shim
if [ "$(find "$mdir" -name '*.prom' 2>/dev/null | wc -l)" != 2 ]; then
	nok "metrics.textfiles ($(find "$mdir" -name '*.prom' 2>/dev/null | wc -l) of 2 in $mdir)"
	finish
fi
ok "metrics.textfiles ($(find "$mdir" -name '*.prom' -printf '%f ' | sort))"
tcp_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ne_port=$(tcp_port) prom_port=$(tcp_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" --collector.disable-defaults \
	--collector.textfile --collector.textfile.directory="$mdir" >"$RUN/node_exporter.log" 2>&1 &
pids+=($!)
cat >"$RUN/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: regcache-textfiles
    static_configs:
      - targets: ["127.0.0.1:$ne_port"]
EOF
prometheus --config.file="$RUN/prometheus.yml" --storage.tsdb.path="$RUN/prom-data" \
	--web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$RUN/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$prom_port/api/v1/query"
# The result of a PromQL query as "labels value" lines (one per series).
query() {
	curl -sf --max-time 5 -G "$api" --data-urlencode "query=$1" 2>/dev/null |
		python3 -c 'import json,sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]
    print(",".join(k + "=" + m[k] for k in ("node", "rank", "job_id") if k in m), r["value"][1])' 2>/dev/null
}
two_series() { [ "$(query 'regcache_shim_ucx_cache_hits_total' | wc -l)" = 2 ]; }
if wait_for 60 two_series; then
	q=$(query 'sum by (node, rank, job_id) (regcache_shim_ucx_cache_hits_total)')
	echo "$q" | sed 's/^/#   regcache_shim_ucx_cache_hits_total /'
	if echo "$q" | grep -q '^node=node1,rank=0,job_id=[0-9][0-9]* [1-9]' &&
		echo "$q" | grep -q '^node=node2,rank=1,job_id=[0-9][0-9]* [0-9]'; then
		ok "prometheus.per_node_series (node1/rank 0 and node2/rank 1, with job_id)"
	else
		nok "prometheus.per_node_series (labels or values not as expected)"
	fi
	n=$(query 'count by (node) (regcache_lookups_total)' | wc -l)
	[ "$n" = 2 ] && ok "prometheus.both_nodes_in_regcache_lookups_total" ||
		nok "prometheus.both_nodes_in_regcache_lookups_total ($n nodes)"
else
	nok "prometheus.scrape (no two regcache_shim_ucx_cache_hits_total series in 60 s)"
	tail -5 "$RUN/prometheus.log" "$RUN/node_exporter.log" | sed 's/^/#   /'
fi
echo "# prometheus phase: $(($(date +%s) - t)) s"
finish
