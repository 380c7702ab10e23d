#!/bin/bash
# The shim's metrics on the host (fake libibverbs, no RDMA device): what a program run under
# the shim shows in its Prometheus textfile and on its /metrics endpoint must be its hits.
#   tests/metrics-check.sh BUILD_DIR        (make check)
# Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
set -u
B=$(cd "${1:-build}" && pwd)
SHIM=$B/libregcache_shim.so
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
nok() { echo "FAIL $*"; fail=$((fail + 1)); }
tmp=$(mktemp -d /tmp/regcache-shim-metrics.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Value of the sample line "$2 VALUE" in file $1 (empty when absent).
value() { awk -v s="$2" '$1 == s { print $2; exit }' "$1"; }
HIT='regcache_lookups_total{result="hit"}'

# 1. Textfile, from a program that also deallocates its PD (its cache leaves the exporter
#    before the last write at exit: the hits must stay).
mkdir "$tmp/tf"
REGCACHE_SHIM_METRICS="textfile=$tmp/tf" LD_PRELOAD=$SHIM "$B/fake_client" >"$tmp/client.out" 2>&1
rc=$?
shim_hits=$(sed -n 's/^hits=\([0-9]*\) .*/\1/p' "$tmp/client.out")
if grep -q "SKIP" "$tmp/client.out"; then
	echo "SKIP the shim has no working monitor here"
	echo "0 passed, 0 failed"
	exit 0
fi
prom=$(ls "$tmp"/tf/regcache-pid*.prom 2>/dev/null | head -1)
if [ "$rc" = 0 ] && [ -n "$prom" ]; then
	ok "fake_client under the shim wrote $(basename "$prom")"
else
	nok "textfile: fake_client exit $rc, files: $(ls -A "$tmp/tf")"
	cat "$tmp/client.out"
fi
v=$([ -n "$prom" ] && value "$prom" "$HIT")
if [ -n "$v" ] && [ "$v" -gt 0 ] && [ "$v" = "$shim_hits" ]; then
	ok "textfile shows the hits after ibv_dealloc_pd ($HIT $v, the shim counted $shim_hits)"
else
	nok "textfile hits: ${v:-none}, the shim counted ${shim_hits:-?}"
fi
[ "$(ls -A "$tmp/tf" | wc -l)" = 1 ] && ok "one file, no temporaries left" ||
	nok "files left: $(ls -A "$tmp/tf")"
# The shim's own counters and the bridges' state are served beside the caches'.
w=$([ -n "$prom" ] && value "$prom" regcache_shim_wrapped_total)
u=$([ -n "$prom" ] && value "$prom" regcache_shim_ucx_bridge_state)
o=$([ -n "$prom" ] && value "$prom" regcache_shim_ofi_bridge_state)
if [ -n "$w" ] && [ "$w" -gt 0 ] && [ "$u" = 0 ] && [ "$o" = 0 ]; then
	ok "textfile: regcache_shim_wrapped_total $w, both bridges unused (state 0)"
else
	nok "textfile: wrapped=${w:-none} ucx_state=${u:-none} ofi_state=${o:-none}"
fi

# 1b. The UCX bridge's counters in the textfile (fake UCX 1.20: hits are UCP's inline lookups).
mkdir "$tmp/ucx"
FAKEUCX_VERSION=1.20.1 REGCACHE_SHIM_METRICS="textfile=$tmp/ucx" LD_PRELOAD=$SHIM \
	"$B/ucx_fake_client" bridge >"$tmp/ucx.out" 2>&1
rc=$?
prom=$(ls "$tmp"/ucx/regcache-pid*.prom 2>/dev/null | head -1)
u=$([ -n "$prom" ] && value "$prom" regcache_shim_ucx_bridge_state)
h=$([ -n "$prom" ] && value "$prom" regcache_shim_ucx_cache_hits_total)
f=$([ -n "$prom" ] && value "$prom" regcache_shim_ucx_forwarded_total)
fake_hits=$(sed -n 's/^mode bridge: hits=\([0-9]*\) .*/\1/p' "$tmp/ucx.out")
if [ "$rc" = 0 ] && [ "$u" = 1 ] && [ -n "$h" ] && [ "$h" = "$fake_hits" ] && [ "${f:-0}" -gt 0 ]; then
	ok "textfile: UCX bridge active (state 1), regcache_shim_ucx_cache_hits_total $h = UCX's own count, forwarded $f"
else
	nok "UCX bridge metrics: exit $rc state=${u:-none} hits=${h:-none} (UCX counted ${fake_hits:-?}) forwarded=${f:-none}"
	cat "$tmp/ucx.out"
fi

# 2. HTTP: the program scrapes its own /metrics (served by the shim's exporter thread).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REGCACHE_SHIM_METRICS="127.0.0.1:$port" REGCACHE_SHIM_VERBOSE=1 LD_PRELOAD=$SHIM \
	"$B/fake_metrics" "127.0.0.1:$port" >"$tmp/http.out" 2>&1
rc=$?
m=$(sed -n 's/^metrics_hits=//p' "$tmp/http.out")
if [ "$rc" = 0 ] && [ -n "$m" ] && [ "$m" -gt 0 ]; then
	ok "/metrics on 127.0.0.1:$port shows $HIT $m, equal to the shim's count"
else
	nok "/metrics: exit $rc"
	cat "$tmp/http.out"
fi
if grep -q "^regcache_shim: pid [0-9]* metrics: http://127.0.0.1:$port/metrics$" "$tmp/http.out"; then
	ok "REGCACHE_SHIM_VERBOSE names the endpoint"
else
	nok "no endpoint line with REGCACHE_SHIM_VERBOSE=1"
fi

# 3. The standard variables when REGCACHE_SHIM_METRICS is unset.
mkdir "$tmp/env"
REGCACHE_METRICS_TEXTFILE_DIR=$tmp/env LD_PRELOAD=$SHIM "$B/fake_metrics" >/dev/null 2>&1
prom=$(ls "$tmp"/env/*.prom 2>/dev/null | head -1)
v=$([ -n "$prom" ] && value "$prom" "$HIT")
[ "${v:-0}" -gt 0 ] && ok "REGCACHE_METRICS_TEXTFILE_DIR also works ($HIT $v)" ||
	nok "REGCACHE_METRICS_TEXTFILE_DIR: no hits in a textfile"

# 4. Bad values: one warning line naming the variable; the cache keeps working.
for bad in "bogus" ":99999" "textfile=$tmp/missing/dir" "interval=0,textfile=$tmp" "127.0.0.1:$port,127.0.0.1:1"; do
	REGCACHE_SHIM_METRICS=$bad LD_PRELOAD=$SHIM "$B/fake_metrics" >"$tmp/bad.out" 2>"$tmp/bad.err"
	rc=$?
	warnings=$(grep -c "^regcache_shim: metrics disabled (REGCACHE_SHIM_METRICS=" "$tmp/bad.err")
	if [ "$rc" = 0 ] && [ "$warnings" = 1 ] && [ "$(wc -l <"$tmp/bad.err")" = 1 ] &&
		grep -q "^hits=9 " "$tmp/bad.out"; then
		ok "REGCACHE_SHIM_METRICS=$bad: $(cat "$tmp/bad.err")"
	else
		nok "REGCACHE_SHIM_METRICS=$bad: exit $rc, stderr:"
		cat "$tmp/bad.err" "$tmp/bad.out"
	fi
done

# A port another process holds (two ranks given one fixed port and no local rank).
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(60)' >"$tmp/holder" &
holder=$!
for _ in $(seq 50); do [ -s "$tmp/holder" ] && break; sleep 0.1; done
taken=$(cat "$tmp/holder")
REGCACHE_SHIM_METRICS=127.0.0.1:$taken LD_PRELOAD=$SHIM "$B/fake_metrics" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
if [ "$rc" = 0 ] && [ "$(wc -l <"$tmp/bad.err")" = 1 ] && grep -q "Address already in use" "$tmp/bad.err"; then
	ok "port in use: $(cat "$tmp/bad.err")"
else
	nok "port in use: exit $rc, stderr: $(cat "$tmp/bad.err")"
fi

# 5. Off: nothing written, nothing said.
mkdir "$tmp/off"
for off in "" "off"; do
	REGCACHE_SHIM_METRICS=$off REGCACHE_METRICS_TEXTFILE_DIR=$tmp/off LD_PRELOAD=$SHIM \
		"$B/fake_metrics" >/dev/null 2>"$tmp/off.err"
	[ -z "$(ls -A "$tmp/off")" ] && [ ! -s "$tmp/off.err" ] &&
		ok "REGCACHE_SHIM_METRICS='$off' exports nothing" ||
		nok "REGCACHE_SHIM_METRICS='$off': $(ls -A "$tmp/off") $(cat "$tmp/off.err")"
done
REGCACHE_SHIM_ENABLE=0 REGCACHE_SHIM_METRICS="textfile=$tmp/off" LD_PRELOAD=$SHIM \
	"$B/fake_metrics" >/dev/null 2>&1
[ -z "$(ls -A "$tmp/off")" ] && ok "REGCACHE_SHIM_ENABLE=0 starts no exporter" ||
	nok "REGCACHE_SHIM_ENABLE=0 wrote $(ls -A "$tmp/off")"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
