#!/bin/bash
# The Debian packages installed, used and removed in the guest (vmtest/guest-deb.sh): an overlay
# of the read-only root takes dpkg -i of the four packages, dkms builds ummunotify for the
# guest's kernel and the postinst loads it, then `regcache doctor`, a C program built with the
# installed pkg-config file and the installed shim run against the installed files, and
# dpkg --purge must leave nothing (module unloaded, no file). No module is preloaded (--no-module).
# The packages: $REGCACHE_DEB_OUT (default: the cargo target directory's debs/, where
# ops/check.sh leaves them; built by it when missing).
# Under emulation (TCG) a kernel takes ~16 min, most of it dpkg and dkms reading the host's
# root over 9p (phase times are printed as "# phase: N s"). Prints "N passed, M failed".
#   vmtest/test-deb.sh [--kernels "6.1 6.12"]     (default: both)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12"
if [ "${1:-}" = --kernels ]; then
	kernels=$2
	shift 2
fi
cd "$ROOT"
target=$(cargo metadata --format-version 1 --no-deps |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
debs=${REGCACHE_DEB_OUT:-$target/debs}
if ! ls "$debs"/regcache-tools_*.deb >/dev/null 2>&1; then
	echo "# no packages in $debs: building them (ops/check.sh)"
	REGCACHE_DEB_OUT=$debs ops/check.sh >/dev/null 2>&1
	ls "$debs"/regcache-tools_*.deb >/dev/null 2>&1 || { echo "0 passed, 1 failed"; exit 1; }
fi
out=$(mktemp -d /tmp/regcache-deb-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
for k in $kernels; do
	"$HERE/run.sh" --quiet --no-module --timeout 1800 --kernel "$k" --out "$out" -- \
		"$HERE/guest-deb.sh" "$debs" >/dev/null
	rc=$?
	sed 's/^ok /ok '"$k"': /; s/^not ok /not ok '"$k"': /' "$out/output.log" | grep -v '^vmtest:'
	[ "$rc" = 0 ] || tail -20 "$out/console.log"
	p=$(grep -c '^ok ' "$out/output.log")
	f=$(grep -c '^not ok ' "$out/output.log")
	pass=$((pass + p)) fail=$((fail + f))
	if [ "$rc" = 0 ] && [ "$p" -gt 0 ]; then
		echo "ok $k: guest run (exit 0, clean kernel log)"
		pass=$((pass + 1))
	else
		echo "not ok $k: guest run exit $rc"
		fail=$((fail + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
