#!/usr/bin/env bash
# The operations checks of issue 14, one `ok`/`not ok` line each, "N passed, M failed" last;
# exits non-zero on any failure. Installs what it needs with apt-get (idempotent; run as root on
# Debian 12).
#   alerts: promtool check rules + test rules (ops/regcache-alerts*.yml), and the mutants of
#           ops/alert-mutants.py must all be caught by those tests
#   dashboard: ops/grafana-regcache.json is valid and every panel query names only metrics the
#           exporter serves (the queries are evaluated against a real Prometheus by
#           exporter/tests/prometheus-e2e.sh)
#   man:    mandoc -T lint on man/*, and man/regcache.3 documents every function and type of
#           ffi/include/regcache.h, man/regcache-shim.7 every REGCACHE_SHIM_* variable the shim
#           reads, man/regcache.1 every subcommand and REGCACHE_* variable of the CLI
#   deb:    (unless --no-deb) dpkg-buildpackage -us -uc -b, lintian, the packages' contents
#
#   ops/check.sh [--no-deb]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT" || exit 2
deb=1
for a in "$@"; do
	case $a in
	--no-deb) deb=0 ;;
	*) echo "usage: ops/check.sh [--no-deb]" >&2; exit 2 ;;
	esac
done

pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
not_ok() { echo "not ok $1${2:+: $2}"; fail=$((fail + 1)); }
# check NAME CMD...: one line, the command's output shown only when it fails.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$name"
	else
		printf '%s\n' "$out" | tail -40
		not_ok "$name"
	fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
}

# --- what the checks need (idempotent) -------------------------------------------------------
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v mandoc >/dev/null || need+=(mandoc)
command -v groff >/dev/null || need+=(groff-base)
command -v python3 >/dev/null || need+=(python3)
if [ "$deb" = 1 ]; then
	for p in dpkg-dev debhelper dh-dkms lintian fakeroot pkg-config; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
fi
if [ "${#need[@]}" -gt 0 ]; then
	echo "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
		>/tmp/regcache-ops-apt.log 2>&1; then
		tail -20 /tmp/regcache-ops-apt.log
		not_ok "install ${need[*]}"
		finish
	fi
fi

# --- alerts ------------------------------------------------------------------------------------
check "alerts: promtool check rules ($(grep -c '^ *- alert:' ops/regcache-alerts.yml) alerts)" \
	promtool check rules ops/regcache-alerts.yml
check "alerts: promtool test rules ($(grep -c '^ *- name:' ops/regcache-alerts.test.yml) tests)" \
	promtool test rules ops/regcache-alerts.test.yml
check "alerts: every alert has a unit test" python3 - <<'EOF'
import re, sys
rules = set(re.findall(r"^\s*- alert: (\w+)", open("ops/regcache-alerts.yml").read(), re.M))
tested = set(re.findall(r"^\s*alertname: (\w+)", open("ops/regcache-alerts.test.yml").read(), re.M))
missing = sorted(rules - tested)
if missing:
    sys.exit("no test for: " + ", ".join(missing))
EOF
check "alerts: the unit tests kill every mutant ($(grep -c '^    ("' ops/alert-mutants.py) mutants)" \
	ops/alert-mutants.py

# --- dashboard ---------------------------------------------------------------------------------
check "dashboard: ops/grafana-regcache.json is what ops/grafana-dashboard.py writes" \
	ops/grafana-dashboard.py --check
nq=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(len(p.get("targets",[])) for p in d["panels"]))' ops/grafana-regcache.json)
check "dashboard: its $nq panel queries name only metrics of exporter/src/collector.rs" python3 - <<'EOF'
import re, sys
served = set(re.findall(r'"(regcache_[a-z_]+)"', open("exporter/src/collector.rs").read()))
names = set()
for n in served:  # the exposed forms: counters _total, units, info, histogram series
    names |= {n + s for s in ("", "_total", "_bytes", "_info", "_seconds_bucket",
                                "_seconds_sum", "_seconds_count")}
used = set(re.findall(r"\b(regcache_[a-z_]+)", open("ops/grafana-regcache.json").read()))
bad = sorted(used - names)
if bad:
    sys.exit("not served by exporter/src/collector.rs: " + ", ".join(bad))
EOF

# --- man pages ---------------------------------------------------------------------------------
for page in man/*.[0-9]; do
	check "man: mandoc -T lint $page (every level, style included)" \
		sh -c 'out=$(mandoc -T lint "$1" 2>&1); [ -z "$out" ] || { echo "$out"; exit 1; }' sh "$page"
	check "man: groff -ww $page" \
		sh -c 'out=$(groff -ww -man -z "$1" 2>&1); [ -z "$out" ] || { echo "$out"; exit 1; }' sh "$page"
done
bin=${REGCACHE_BIN:-}
if [ -z "$bin" ]; then
	if cargo build --release -q -p regcache-cli; then
		bin=$(cargo metadata --format-version 1 --no-deps |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/regcache
	else
		not_ok "build regcache-cli (for regcache.1's check)"
	fi
fi
if [ -n "$bin" ]; then
	while IFS= read -r line; do
		case $line in
		"ok "*) ok "man: ${line#ok }" ;;
		"not ok "*) not_ok "man: ${line#not ok }" ;;
		*) echo "$line" ;;
		esac
	done < <(ops/man-check.py "$bin" 2>&1 || echo "not ok ops/man-check.py exited with $?")
fi

finish
