#!/bin/sh
# Inside the guest, after guest-rxe.sh (rxe0 = 10.9.0.1, rxe1 = 10.9.0.2): regcache-rdmatest
# server on rxe0, client on rxe1.
#   guest-rdma.sh pair BIN PORT [ARGS...]   one run; exit: the server's (or the client's)
#   guest-rdma.sh suite BIN N NEG           ummunotify, uffd, negative control; writes
#                                           "name exit" lines to $VMTEST_OUT/results
#   guest-rdma.sh bench BIN                 --bench, then perftest ib_write_bw
self=$0
mode=$1
shift
# "DROPPED RETRIES DUPLICATES" so far: packets the guest's network backlog dropped (all CPUs),
# the requester's (rxe1's) retransmission rounds, the responder's (rxe0's) duplicate requests.
# Soft-RoCE recovers from loss by go-back-N retransmission, which 6.1's rxe can stall in for
# good; guest-rxe.sh sizes the backlog so that nothing is dropped (docs/bench-rdma.md).
transport() {
	drops=0
	while read -r _ d _; do
		drops=$((drops + 0x$d))
	done </proc/net/softnet_stat
	echo "$drops $(counter rxe1 completer_retry_err) $(counter rxe0 duplicate_request)"
}
counter() {
	rdma statistic show link "$1/1" | tr ' ' '\n' | awk -v k="$2" 'p == k { print; exit } { p = $0 }'
}
case $mode in
pair)
	bin=$1 port=$2
	shift 2
	before=$(transport)
	"$bin" --client --dev rxe1 --connect 10.9.0.1:"$port" --quiet "$@" &
	cpid=$!
	"$bin" --server --dev rxe0 --addr 10.9.0.1:"$port" "$@"
	src=$?
	wait "$cpid"
	crc=$?
	set -- $before $(transport)
	echo "transport: $(($4 - $1)) packets dropped, $(($5 - $2)) retransmissions" \
		"($(($6 - $3)) duplicate requests)"
	if [ "$src" = 0 ] && [ "$crc" != 0 ]; then
		echo "client exit $crc"
		exit "$crc"
	fi
	exit "$src"
	;;
suite)
	bin=$1 n=$2 neg=$3
	run() {
		name=$1 port=$2
		shift 2
		s=$(date +%s)
		"$self" pair "$bin" "$port" "$@" >"$VMTEST_OUT/$name.log" 2>&1
		rc=$?
		echo "$name $rc" >>"$VMTEST_OUT/results"
		echo "== $name (exit $rc, $(($(date +%s) - s)) s)"
		grep -E '^(RESULT|server: [0-9]+ transfers|server: cache|server: first|client|transport)' \
			"$VMTEST_OUT/$name.log"
	}
	run rdma_ummunotify 7471 --monitor ummunotify --transfers "$n"
	run rdma_uffd 7472 --monitor uffd --transfers "$n"
	run rdma_negative 7473 --monitor ummunotify --no-invalidation --transfers "$neg" \
		--fork-every 0
	;;
bench)
	bin=$1
	echo "kernel $(uname -r)"
	"$self" pair "$bin" 7470 --monitor ummunotify --bench
	echo
	echo "### perftest ib_write_bw, rxe1 -> rxe0 (same VM run)"
	echo
	for s in 65536 1048576; do
		ib_write_bw -d rxe0 -x 1 -s "$s" -n 400 >/tmp/bw.srv 2>&1 &
		sleep 1
		ib_write_bw -d rxe1 -x 1 -s "$s" -n 400 10.9.0.1 | grep -A1 '#bytes'
		wait
	done
	;;
*)
	echo "usage: $0 pair|suite|bench ..." >&2
	exit 2
	;;
esac
