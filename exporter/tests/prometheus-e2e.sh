#!/usr/bin/env bash
# The exporter against a real Prometheus (Debian's package), loopback only:
#   1. `regcache demo` with REGCACHE_METRICS_ADDR=127.0.0.1:0 and a hold time;
#   2. a Prometheus server on another loopback port scraping it every second (temporary config
#      and TSDB directory);
#   3. Prometheus's HTTP API must report hits > 0, corrupted transfers == 0, the target up;
#   4. `promtool check metrics` on the exposition must be clean.
# Both processes are stopped by their PIDs on exit. Every wait is bounded. Prints
# "N passed, M failed" last; exits non-zero on any failure.
#   exporter/tests/prometheus-e2e.sh            (builds regcache-cli in release mode)
#   REGCACHE_BIN=/path/to/regcache exporter/tests/prometheus-e2e.sh
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

demo_pid="" prom_pid=""
tmp=$(mktemp -d /tmp/regcache-prom-e2e.XXXXXX)
cleanup() {
	for pid in $demo_pid $prom_pid; do
		kill "$pid" 2>/dev/null
	done
	for pid in $demo_pid $prom_pid; do
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

# Waits up to $1 seconds for command $2... to succeed.
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.5
	done
}

REGCACHE_METRICS_ADDR=127.0.0.1:0 "$bin" demo --iterations 100 --metrics-hold 300 \
	>"$tmp/demo.log" 2>&1 </dev/null &
demo_pid=$!
# The demo prints "metrics: http://127.0.0.1:PORT/metrics" once it listens, and "metrics:
# serving for" once its run is over (its counters are then final).
if ! wait_for 600 grep -q "^metrics: serving for" "$tmp/demo.log"; then
	cat "$tmp/demo.log"
	not_ok demo "did not finish its run (or could not start the exporter)"
	finish
fi
target=$(sed -n 's|^metrics: http://\(127\.0\.0\.1:[0-9]*\)/metrics$|\1|p' "$tmp/demo.log")
if grep -q "^corrupted transfers: 0$" "$tmp/demo.log" && [ -n "$target" ]; then
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

# --- Prometheus scraping it --------------------------------------------------------------------
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: regcache
    static_configs:
      - targets: ["$target"]
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
check_query "hits > 0" 'sum(regcache_lookups_total{result="hit"})' 'v > 0'
check_query "corruptions == 0" 'sum(regcache_demo_corrupted_transfers_total)' 'v == 0'
check_query "transfers > 0" 'sum(regcache_demo_transfers_total)' 'v > 0'
check_query "latency histogram" \
	'histogram_quantile(0.5, sum by (le) (regcache_registration_duration_seconds_bucket))' 'v > 0'
check_query "monitor info" 'count(regcache_cache_info{registrar="uring"})' 'v == 1'
finish
