#!/usr/bin/env bash
# The operations checks of issue 14, one `ok`/`not ok` line each, "N passed, M failed" last;
# exits non-zero on any failure. Installs what it needs with apt-get (idempotent; run as root on
# Debian 12).
#   alerts: promtool check rules + test rules (ops/regcache-alerts*.yml), and the mutants of
#           ops/alert-mutants.py must all be caught by those tests
#   dashboard: ops/grafana-regcache.json is valid and every panel query names only metrics the
#           exporter or the shim serves (the queries are evaluated against a real Prometheus by
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
	for p in dpkg-dev debhelper dh-dkms lintian fakeroot pkgconf libibverbs-dev libclang-dev libfabric-dev git; do
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
check "dashboard: its $nq panel queries name only metrics of exporter/src/collector.rs and mpi-shim/shim.c" python3 - <<'EOF'
import re, sys
served = set(re.findall(r'"(regcache_[a-z_]+)"', open("exporter/src/collector.rs").read()))
served |= set(re.findall(r'"(regcache_shim_[a-z_]+)"', open("mpi-shim/shim.c").read()))
names = set()
for n in served:  # the exposed forms: counters _total, units, info, histogram series
    names |= {n + s for s in ("", "_total", "_bytes", "_info", "_seconds_bucket",
                                "_seconds_sum", "_seconds_count")}
used = set(re.findall(r"\b(regcache_[a-z_]+)", open("ops/grafana-regcache.json").read()))
bad = sorted(used - names)
if bad:
    sys.exit("not served by exporter/src/collector.rs nor mpi-shim/shim.c: " + ", ".join(bad))
EOF

check "docs: docs/operations.md lists every metric of exporter/src/collector.rs and mpi-shim/shim.c" python3 - <<'EOF'
import re, sys
names = set(re.findall(r'"(regcache_[a-z_]+)"', open("exporter/src/collector.rs").read()))
names |= set(re.findall(r'"(regcache_shim_[a-z_]+)"', open("mpi-shim/shim.c").read()))
doc = open("docs/operations.md").read()
# As exposed: the unit, counter and info suffixes the exporter appends.
missing = sorted(n for n in names if not re.search(
    "`" + re.escape(n) + r"(_seconds|_bytes|_total|_info)?[`{]", doc))
if not names or missing:
    sys.exit("not in docs/operations.md: " + ", ".join(missing or ["(no names found)"]))
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

[ "$deb" = 1 ] || finish

# --- Debian packages ---------------------------------------------------------------------------
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
upstream=${version%-*}
ws=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
if [ "$upstream" = "$ws" ]; then
	ok "deb: one version: debian/changelog $version, Cargo.toml $ws"
else
	not_ok "deb: debian/changelog says $upstream, Cargo.toml $ws"
fi
check "deb: debian/ummunotify-dkms.dkms is kmod/dkms.conf but for the version" \
	diff <(grep -v '^PACKAGE_VERSION=' kmod/dkms.conf) <(grep -v '^PACKAGE_VERSION=' debian/ummunotify-dkms.dkms)

# Built from a copy of the tree (tracked and new files), so the .debs land outside it; the
# cargo target directory persists between runs (REGCACHE_DEB_TARGET_DIR) to build once.
# The packages are left in $REGCACHE_DEB_OUT (default target/debs) for vmtest/test-deb.sh.
cargo_target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null)
cargo_target=${cargo_target:-$ROOT/target}
deb_target=${REGCACHE_DEB_TARGET_DIR:-$cargo_target/deb-build}
deb_out=${REGCACHE_DEB_OUT:-$cargo_target/debs}
work=$(mktemp -d /tmp/regcache-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/regcache-$upstream
mkdir -p "$src" "$deb_target"
git ls-files -z -co --exclude-standard | grep -zv '^target/' | tar -C "$ROOT" --null -T - -cf - | tar -C "$src" -xf -
start=$(date +%s)
if (cd "$src" && REGCACHE_CARGO_TARGET_DIR=$deb_target dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	ok "deb: dpkg-buildpackage -us -uc -b (offline cargo, $(($(date +%s) - start)) s)"
else
	tail -40 "$work/build.log"
	not_ok "deb: dpkg-buildpackage -us -uc -b"
	finish
fi
changes=$work/regcache_${version}_amd64.changes
lintian --info "$changes" >"$work/lintian.log" 2>&1
grep -v '^N:' "$work/lintian.log" | sort -u >"$work/lintian.tags"
if ! grep -q '^[EW]:' "$work/lintian.tags"; then
	ok "deb: lintian: no errors, no warnings ($(grep -c '^I:' "$work/lintian.tags") info tags, $(grep -c '^[^#]' debian/*.lintian-overrides | awk -F: '{n+=$2} END {print n}') overrides, each explained)"
else
	grep '^[EW]:' "$work/lintian.tags"
	not_ok "deb: lintian errors or warnings"
fi
check "deb: every lintian override has a comment explaining it" python3 - <<'EOF'
import glob, sys
bad = []
for f in glob.glob("debian/*.lintian-overrides"):
    lines = open(f).read().splitlines()
    for i, l in enumerate(lines):
        if l.strip() and not l.startswith("#") and (i == 0 or not lines[i - 1].startswith("#")):
            bad.append(f"{f}:{i + 1}: {l}")
if bad:
    sys.exit("override without a comment:\n" + "\n".join(bad))
EOF

# Contents: exactly what each package must ship (besides its doc directory and lintian overrides).
contents() { dpkg-deb -c "$work/$1" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' | grep -v '^/usr/share/doc/' | grep -v '^/usr/share/lintian/overrides/' | sort; }
expect() { # package file, expected paths
	local f=$1
	shift
	if diff <(printf '%s\n' "$@" | sort) <(contents "$f") >"$work/diff" 2>&1; then
		ok "deb: $f ships its $# files"
	else
		cat "$work/diff"
		not_ok "deb: $f contents"
	fi
}
ma=/usr/lib/x86_64-linux-gnu
# The module's sources are the objects kmod/Kbuild builds (so a new file cannot be forgotten
# by debian/rules without this failing, nor listed here by hand).
kmod_srcs=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' kmod/Kbuild | sed -n 's/^ummunotify-y[ +:]*=//p' |
	tr ' \t' '\n\n' | sed -n 's/\.o$/.c/p')
# shellcheck disable=SC2046
expect "ummunotify-dkms_${version}_all.deb" \
	/usr/src/ummunotify-$upstream/{Kbuild,Makefile,dkms.conf,umn.h} \
	$(printf "/usr/src/ummunotify-$upstream/%s\n" $kmod_srcs) \
	/usr/src/ummunotify-$upstream/include/uapi/linux/ummunotify.h \
	/usr/lib/udev/rules.d/99-ummunotify.rules /usr/lib/modules-load.d/ummunotify.conf \
	/usr/share/man/man4/ummunotify.4.gz
expect "libregcache0_${version}_amd64.deb" \
	$ma/libregcache.so.$upstream $ma/libregcache.so.0 $ma/regcache/libregcache_shim.so \
	$ma/regcache/libregcache_ofi.so /usr/share/man/man7/regcache-shim.7.gz
expect "libregcache-dev_${version}_amd64.deb" \
	/usr/include/regcache.h $ma/libregcache.so $ma/libregcache.a $ma/pkgconfig/regcache.pc \
	/usr/share/man/man3/regcache.3.gz
expect "regcache-tools_${version}_amd64.deb" \
	/usr/bin/regcache /usr/share/regcache/prometheus/regcache-alerts.yml \
	/usr/share/regcache/grafana/grafana-regcache.json /usr/share/man/man1/regcache.1.gz

# The packaged files work: unpacked into a directory, a C program built through the packaged
# pkg-config file (sysroot) against the packaged header and library gets and releases a
# registration; the packaged shim and command run.
x=$work/root
for d in "$work"/*.deb; do dpkg-deb -x "$d" "$x"; done
cat >"$work/t.c" <<'EOF'
#include <regcache.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
	struct regcache_attr attr = { .size = sizeof(attr), .registrar = REGCACHE_REGISTRAR_NOOP };
	struct regcache_cache *c;
	struct regcache_mr *mr;
	static char buf[1 << 16];
	int rc = regcache_create(&attr, &c);
	if (rc == 0)
		rc = regcache_get(c, buf, sizeof(buf), 1, &mr);
	if (rc == 0)
		rc = regcache_release(mr);
	if (rc == 0)
		rc = regcache_destroy(c);
	printf("rc=%d\n", rc);
	return rc != 0;
}
EOF
if flags=$(PKG_CONFIG_PATH=$x$ma/pkgconfig PKG_CONFIG_SYSROOT_DIR=$x pkg-config --cflags --libs regcache) &&
	cc -o "$work/t" "$work/t.c" $flags >"$work/cc.log" 2>&1 &&
	LD_LIBRARY_PATH=$x$ma "$work/t" >"$work/t.log" 2>&1; then
	ok "deb: a C program built with the packaged pkg-config file, header and library runs"
else
	cat "$work/cc.log" "$work/t.log" 2>/dev/null
	not_ok "deb: C program against the packaged library"
fi
# libregcache.a named explicitly (the .so would win for -lregcache), the rest from Libs.private.
if (static=$(PKG_CONFIG_PATH=$x$ma/pkgconfig PKG_CONFIG_SYSROOT_DIR=$x pkg-config --static --cflags --libs regcache) &&
	cc -o "$work/ts" "$work/t.c" $x$ma/libregcache.a ${static//-lregcache/} &&
	! ldd "$work/ts" | grep -q libregcache && "$work/ts") >"$work/static.log" 2>&1; then
	ok "deb: the same program linked with the packaged libregcache.a (pkg-config --static) runs"
else
	tail -5 "$work/static.log"
	not_ok "deb: static link against the packaged libregcache.a"
fi
check "deb: the packaged regcache runs (--version)" "$x/usr/bin/regcache" --version
check "deb: the packaged shim loads (LD_PRELOAD of /bin/true)" \
	env LD_PRELOAD=$x$ma/regcache/libregcache_shim.so LD_LIBRARY_PATH=$x$ma /bin/true
mkdir -p "$deb_out"
rm -f "$deb_out"/*.deb
cp "$work"/*.deb "$deb_out"/
echo "# packages in $deb_out"

finish
