# Sourced by vmtest/test-shim.sh and vmtest/test-ofi.sh: what their server/client tests share.
#   ok NAME / nok NAME     one result line, counted in $pass / $fail
#   run_pair TAG ARGS...   one server/client pair over the two rxe devices (in the guest)
#   guest_summary          the guest's last line, and the counts for the host
#   run_kernels NAME ARGS...  on the host: the script's guest part on each of $kernels
# The sourcing script sets HERE (vmtest/) and, in the guest, OUT (where run_pair writes).

pass=0 fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
nok() { echo "not ok $*"; fail=$((fail + 1)); }

# One server/client pair. The caller defines pair_server and pair_client, each called as
# `pair_server TAG ARGS...` and run with its output in $OUT/TAG.server or $OUT/TAG.client;
# the server in the background, the client PAIR_DELAY seconds later (default 0) and, with
# PAIR_WAIT_PORT, once the server listens on that TCP port. When the
# client is done: PAIR_END=grace (default) gives the server 30 s more to finish before it is
# killed; PAIR_END=kill_if_died kills it at once if the client died (exit > 1), else waits.
# Writes "rc_s rc_c" to $OUT/TAG.rc.
run_pair() {
	local tag=$1 srv rc_s rc_c
	pair_server "$@" >"$OUT/$tag.server" 2>&1 &
	srv=$!
	[ "${PAIR_DELAY:-0}" = 0 ] || sleep "$PAIR_DELAY"
	# PAIR_WAIT_PORT: also wait (up to 60 s) until the server listens on that TCP port, so
	# that a slow start (a loaded host) cannot make the client race it.
	if [ -n "${PAIR_WAIT_PORT:-}" ]; then
		for _ in $(seq 120); do
			[ -n "$(ss -Hltn "sport = :$PAIR_WAIT_PORT" 2>/dev/null)" ] && break
			kill -0 $srv 2>/dev/null || break
			sleep 0.5
		done
	fi
	pair_client "$@" >"$OUT/$tag.client" 2>&1
	rc_c=$?
	case ${PAIR_END:-grace} in
	grace) ( sleep 30; kill $srv 2>/dev/null ) & ;;
	# A client that died leaves the server waiting for a message: do not wait for it.
	kill_if_died) [ "$rc_c" -gt 1 ] && kill $srv 2>/dev/null ;;
	esac
	wait $srv
	rc_s=$?
	echo "$rc_s $rc_c" >"$OUT/$tag.rc"
}

# The guest's last line; the counts go to the host through $VMTEST_OUT/summary.
guest_summary() {
	echo "$pass $fail" >"$VMTEST_OUT/summary"
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
}

# On the host: runs `SCRIPT --guest ARGS...` (SCRIPT = $HERE/test-NAME.sh) inside guest-rxe.sh
# on each kernel of $kernels, adds a kernel_log_clean check per kernel, prints the totals and
# returns 0 when nothing failed. Logs of a failed guest are kept in /tmp/vmtest-NAME.* (all
# logs with KEEP_LOGS=1). The guest's time limit is RUN_TIMEOUT seconds (default 900).
run_kernels() {
	local name=$1 k out rc p f total_pass=0 total_fail=0
	shift
	for k in $kernels; do
		out=$(mktemp -d /tmp/vmtest-$name.XXXXXX)
		"$HERE/run.sh" --kernel "$k" --out "$out" --timeout "${RUN_TIMEOUT:-900}" --quiet -- \
			"$HERE/guest-rxe.sh" "$HERE/test-$name.sh" --guest "$@"
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
		if [ "$rc" -le 1 ] && [ "$f" = 0 ] && [ "${KEEP_LOGS:-0}" = 0 ]; then
			rm -rf "$out"
		else
			echo "# logs: $out"
		fi
	done
	echo "$total_pass passed, $total_fail failed"
	[ "$total_fail" = 0 ]
}
