#!/usr/bin/env bash
# The exporter against a real Prometheus (Debian's package), loopback only:
#   1. a Prometheus server on a loopback port, scraping every second the port the demo will
#      listen on (temporary config and TSDB directory);
#   2. `regcache demo` with REGCACHE_METRICS_ADDR on that port, launcher variables for the
#      job_id/rank labels (rank 0), long enough (~6 s) for several scrapes during the run, and a
#      hold time;
#   2b. a program under the LD_PRELOAD shim (mpi-shim/tests/fake_metrics.c over the fake
#      libibverbs, no RDMA device) as rank 1 of the same job, serving the caches' and the shim's
#      own regcache_shim_* metrics with REGCACHE_SHIM_METRICS on a second scraped port, its
#      counters moving every 100 ms while scraped, with a lower RLIMIT_MEMLOCK soft limit of
#      its own (4 MiB: regcache_memlock_limit_bytes must be each process's own limit);
#   2c. the UCX bridge under the shim (mpi-shim/tests/ucx_fake_client.c over fake UCX 1.20 and
#      the fake libibverbs), held alive and scraped too, as job_id e2e-ucx (its work is over
#      before the first scrape: out of the job whose rates the dashboard queries evaluate);
#   3. Prometheus's HTTP API must report hits > 0, corrupted transfers == 0, both targets up,
#      drain and registration latency observations, each process's memlock limit;
#   4. `promtool check metrics` on the exposition must be clean;
#   5. every query of the Grafana dashboard (ops/grafana-regcache.json, panels and variables,
#      Grafana's $variables replaced by "all" and $__rate_interval by 1m) must give a non-empty,
#      finite result, every regcache_* metric the alert rules (ops/regcache-alerts.yml) name
#      must be served, and no alert expression may fire on this healthy run.
# The processes are stopped by their PIDs on exit. Every wait is bounded. Prints
# "N passed, M failed" last; exits non-zero on any failure.
#   exporter/tests/prometheus-e2e.sh            (builds regcache-cli in release mode)
#   REGCACHE_BIN=/path/to/regcache exporter/tests/prometheus-e2e.sh
#   REGCACHE_SHIM_BUILD=DIR: the shim and fake_metrics already built there (default: make -C
#   mpi-shim, into mpi-shim/build)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
not_ok() { echo "not ok $1${2:+: $2}"; fail=$((fail + 1)); }
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}

demo_pid="" prom_pid="" shim_pid="" ucx_pid=""
tmp=$(mktemp -d /tmp/regcache-prom-e2e.XXXXXX)
cleanup() {
	for pid in $demo_pid $shim_pid $ucx_pid $prom_pid; do
		kill "$pid" 2>/dev/null
	done
	for pid in $demo_pid $shim_pid $ucx_pid $prom_pid; do
		wait "$pid" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# --- Prometheus and promtool (idempotent) ----------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
	echo "installing Debian's prometheus package"
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
		>"$tmp/apt.log" 2>&1; then
		tail -20 "$tmp/apt.log"
		not_ok install "apt-get install prometheus failed"
		finish
	fi
fi
ok "prometheus installed ($(prometheus --version 2>&1 | head -1))"

# --- regcache ----------------------------------------------------------------------------------
bin=${REGCACHE_BIN:-}
if [ -z "$bin" ]; then
	cd "$ROOT" || exit 2
	if ! cargo build --release -q -p regcache-cli; then
		not_ok build
		finish
	fi
	bin=$(cargo metadata --format-version 1 --no-deps |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/regcache
fi
[ -x "$bin" ] || { not_ok build "no executable $bin"; finish; }

# --- the shim and its host-side fakes -------------------------------------------------------------
shim_build=${REGCACHE_SHIM_BUILD:-}
if [ -z "$shim_build" ]; then
	if ! make -C "$ROOT/mpi-shim" -s >"$tmp/shim-build.log" 2>&1; then
		tail -20 "$tmp/shim-build.log"
		not_ok "build the shim (make -C mpi-shim)"
		finish
	fi
	shim_build=$ROOT/mpi-shim/build
fi
shim_so=$shim_build/libregcache_shim.so
fake=$shim_build/fake_metrics
ucx_fake=$shim_build/ucx_fake_client
[ -f "$shim_so" ] && [ -x "$fake" ] && [ -x "$ucx_fake" ] ||
	{ not_ok build "no $shim_so, $fake or $ucx_fake"; finish; }

# shellcheck source=scripts/wait-for.sh
. "$ROOT/scripts/wait-for.sh"

# --- Prometheus, scraping the port the demo will listen on ---------------------------------
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
prom_port=$(free_port)
demo_port=$(free_port)
shim_port=$(free_port)
ucx_port=$(free_port)
target=127.0.0.1:$demo_port
shim_target=127.0.0.1:$shim_port
ucx_target=127.0.0.1:$ucx_port
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: regcache
    static_configs:
      - targets: ["$target"]
  - job_name: regcache-shim
    static_configs:
      - targets: ["$shim_target", "$ucx_target"]
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
	--web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
	>"$tmp/prometheus.log" 2>&1 </dev/null &
prom_pid=$!
api="http://127.0.0.1:$prom_port/api/v1/query"
# Prints the value of a PromQL query's first result (nothing when there is none).
query() {
	local body
	body=$(curl -sf --max-time 5 -G "$api" --data-urlencode "query=$1") || return 0
	python3 -c 'import json,sys
r = json.loads(sys.argv[1])["data"]["result"]
if r: print(r[0]["value"][1])' "$body"
}
has_value() { [ -n "$(query "$1")" ]; }
# Prometheus has tried the (not yet listening) target once: the demo's run will be scraped.
if ! wait_for 60 has_value 'up{job="regcache"}'; then
	tail -20 "$tmp/prometheus.log"
	not_ok "Prometheus start" "no scrape attempt after 60 s"
	finish
fi

# --- the program under the shim (rank 1), running through the demo's run and the queries ------
# Its own soft RLIMIT_MEMLOCK (lowering needs no privilege), in KiB for ulimit.
shim_memlock_kib=4096
(ulimit -S -l "$shim_memlock_kib" &&
	SLURM_JOB_ID=e2e SLURM_PROCID=1 SLURM_LOCALID=0 REGCACHE_SHIM_METRICS=$shim_target \
		LD_PRELOAD=$shim_so exec "$fake" --serve 240) >"$tmp/shim.log" 2>&1 </dev/null &
shim_pid=$!
SLURM_JOB_ID=e2e-ucx SLURM_PROCID=0 SLURM_LOCALID=0 REGCACHE_SHIM_METRICS=$ucx_target \
	FAKEUCX_VERSION=1.20.1 UCX_FAKE_HOLD=240 LD_PRELOAD=$shim_so \
	"$ucx_fake" bridge >"$tmp/ucx.log" 2>&1 </dev/null &
ucx_pid=$!

# --- the demo ----------------------------------------------------------------------------------
SLURM_JOB_ID=e2e SLURM_PROCID=0 SLURM_LOCALID=0 REGCACHE_METRICS_ADDR=$target \
	"$bin" demo --iterations 600 --metrics-hold 300 \
	>"$tmp/demo.log" 2>&1 </dev/null &
demo_pid=$!
# The demo prints "metrics: http://127.0.0.1:PORT/metrics" once it listens, and "metrics:
# serving for" once its run is over (its counters are then final).
if ! wait_for 600 grep -q "^metrics: serving for" "$tmp/demo.log"; then
	cat "$tmp/demo.log"
	not_ok demo "did not finish its run (or could not start the exporter)"
	finish
fi
if grep -q "^corrupted transfers: 0$" "$tmp/demo.log" &&
	grep -q "^metrics: http://$target/metrics$" "$tmp/demo.log"; then
	ok "demo ran, no corruption, metrics on $target"
else
	cat "$tmp/demo.log"
	not_ok demo "no metrics address or corrupted transfers"
	finish
fi

# --- promtool on the exposition ----------------------------------------------------------------
if curl -sf --max-time 5 "http://$target/metrics" >"$tmp/metrics.txt" &&
	promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.log" 2>&1 &&
	[ ! -s "$tmp/promtool.log" ]; then
	ok "promtool check metrics: clean ($(grep -c '^# TYPE' "$tmp/metrics.txt") families)"
else
	cat "$tmp/promtool.log"
	not_ok "promtool check metrics"
fi

if wait_for 120 has_value 'regcache_lookups_total{result="hit"}'; then
	ok "Prometheus scraped the demo"
else
	tail -20 "$tmp/prometheus.log"
	not_ok "Prometheus scrape" "no regcache_lookups_total after 120 s"
	finish
fi
check_query() { # name, PromQL, python condition on v
	local v
	v=$(query "$2")
	if [ -n "$v" ] && python3 -c "import sys; v=float(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$v"; then
		ok "$1 ($2 = $v)"
	else
		not_ok "$1" "$2 = ${v:-no result}"
	fi
}
check_query "target up" 'up{job="regcache"}' 'v == 1'
if grep -q "^hits=9 enabled=1$" "$tmp/shim.log" && wait_for 30 has_value \
	'sum(rate(regcache_shim_wrapped_total{job="regcache-shim",job_id="e2e",rank="1"}[1m])) > 0'; then
	ok "program under the shim (rank 1) scraped on $shim_target"
else
	cat "$tmp/shim.log"
	not_ok "shim target" "no moving regcache_shim_wrapped_total from rank 1 after 30 s"
fi
check_query "shim targets up" 'sum(up{job="regcache-shim"})' 'v == 2'
check_query "shim: passthrough registrations" \
	'sum(rate(regcache_shim_passthrough_total{job_id="e2e",rank="1"}[1m]))' 'v > 0'
check_query "shim: the cache hits under the shim" \
	'sum(rate(regcache_lookups_total{job_id="e2e",rank="1",result="hit"}[1m]))' 'v > 0'
check_query "shim process: its own memlock limit (ulimit -S -l $shim_memlock_kib)" \
	'max(regcache_memlock_limit_bytes{job_id="e2e",rank="1"})' "v == $shim_memlock_kib * 1024"
if grep -q "^10 passed, 0 failed$" "$tmp/ucx.log"; then
	ok "ucx_fake_client bridge under the shim: $(grep '^mode bridge' "$tmp/ucx.log")"
else
	cat "$tmp/ucx.log"
	not_ok "ucx_fake_client bridge under the shim"
fi
check_query "UCX bridge active (state 1) as scraped" \
	'max(regcache_shim_ucx_bridge_state{job_id="e2e-ucx"})' 'v == 1'
ucx_hits=$(sed -n 's/^mode bridge: hits=\([0-9]*\) .*/\1/p' "$tmp/ucx.log")
check_query "UCX cache hits as scraped = UCX's own count (${ucx_hits:-?})" \
	'max(regcache_shim_ucx_cache_hits_total{job_id="e2e-ucx"})' "v == ${ucx_hits:--1} and v > 0"
check_query "UCX forwarded ranges as scraped" \
	'max(regcache_shim_ucx_forwarded_total{job_id="e2e-ucx"})' 'v > 0'
check_query "UCX unwatched registrations as scraped" \
	'max(regcache_shim_ucx_unwatched_total{job_id="e2e-ucx"})' 'v == 0'
check_query "libfabric bridge unused (state 0) as scraped" \
	'max(regcache_shim_ofi_bridge_state{job_id="e2e-ucx"})' 'v == 0'
demo_memlock=$(ulimit -S -l)
if [ "$demo_memlock" = unlimited ]; then
	check_query "demo: memlock unlimited, no limit served" \
		'count(regcache_memlock_limit_bytes{job="regcache"}) or vector(0)' 'v == 0'
else
	check_query "demo: its memlock limit (ulimit -S -l $demo_memlock)" \
		'max(regcache_memlock_limit_bytes{job="regcache"})' "v == $demo_memlock * 1024"
fi
for r in 0 1; do
	check_query "rank $r: drain latency histogram (drains that read events)" \
		"histogram_quantile(0.5, sum by (le) (rate(regcache_drain_duration_seconds_bucket{job_id=\"e2e\",rank=\"$r\"}[1m])))" \
		'v > 0 and v < 0.1'
done
check_query "hits > 0" 'sum(regcache_lookups_total{result="hit"})' 'v > 0'
check_query "corruptions == 0" 'sum(regcache_demo_corrupted_transfers_total)' 'v == 0'
check_query "transfers > 0" 'sum(regcache_demo_transfers_total)' 'v > 0'
check_query "latency histogram" \
	'histogram_quantile(0.5, sum by (le) (regcache_registration_duration_seconds_bucket))' 'v > 0'
check_query "monitor info" 'count(regcache_cache_info{registrar="uring"})' 'v == 1'

# --- the dashboard's queries and the alerts' metrics (ops/) -----------------------------------
# Two scrapes after the run, so every rate window holds the run's last counts.
sleep 2
while IFS= read -r line; do
	case $line in
	"ok "*) ok "${line#ok }" ;;
	"not ok "*) not_ok "${line#not ok }" ;;
	*) echo "$line" ;;
	esac
done < <(python3 "$ROOT/ops/prom-queries.py" "http://127.0.0.1:$prom_port" e2e 2>&1 ||
	echo "not ok ops/prom-queries.py exited with $?")
finish
