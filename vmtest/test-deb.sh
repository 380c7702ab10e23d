#!/bin/bash
# The Debian packages installed, used and removed in the guest (vmtest/guest-deb.sh, after
# guest-rxe.sh): an overlay of the read-only root takes dpkg -i of the four packages, dkms builds
# ummunotify for the guest's kernel and the postinst loads it, then `regcache doctor`, the C ABI
# test suite (ffi/tests/run-c-tests.sh --installed: the packages' header, pkg-config file and
# library) and the installed shim in regcache-rdmatest over Soft-RoCE (every transfer intact,
# hits, and its negative control corrupting) run against the installed files, and
# dpkg --purge must leave nothing (module unloaded, no file). No module is preloaded
# (--no-module).
# The packages: $REGCACHE_DEB_OUT (default: the cargo target directory's debs/, where
# ops/check.sh leaves them; built by it when missing).
# Per kernel the guest prints its phases ("# phase NAME: N s") and this script the kernel's wall
# time (which includes waiting for the vmtest lock). Prints "N passed, M failed".
# First, natively and for both Debian kernels whatever --kernels says, the packaged module
# sources are built as dkms builds them (dkms.conf's MAKE[0] and BUILT_MODULE_LOCATION, in a copy
# of the package's /usr/src directory): seconds, where a guest's dkms build takes ~2 minutes of
# emulation. `make test` installs in the 6.12 guest only (CI time); .ci/run adds the 6.1 guest
# weekly (Sundays, with the two-node run).
#   vmtest/test-deb.sh [--kernels "6.1 6.12"]     (default: both)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
kernels="6.1 6.12"
native_kernels="6.1 6.12"
if [ "${1:-}" = --kernels ]; then
	kernels=$2
	shift 2
fi
cd "$ROOT" || exit 2
target=$(cargo metadata --format-version 1 --no-deps |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
debs=${REGCACHE_DEB_OUT:-$target/debs}
if ! ls "$debs"/regcache-tools_*.deb >/dev/null 2>&1; then
	echo "# no packages in $debs: building them (ops/check.sh)"
	REGCACHE_DEB_OUT=$debs ops/check.sh >/dev/null 2>&1
	ls "$debs"/regcache-tools_*.deb >/dev/null 2>&1 || { echo "0 passed, 1 failed"; exit 1; }
fi
pass=0 fail=0
# The packaged sources, built as dkms would for each Debian kernel (natively, in a scratch copy).
src=$(mktemp -d /tmp/regcache-deb-src.XXXXXX)
dpkg-deb -x "$(ls "$debs"/ummunotify-dkms_*.deb | head -1)" "$src/root"
pkgsrc=$(ls -d "$src"/root/usr/src/ummunotify-*)
conf() { sed -n "s/^$1=\"\(.*\)\"\$/\1/p" "$pkgsrc/dkms.conf"; }
for k in $native_kernels; do
	kver=$(basename "$(ls -d /lib/modules/"$k".*-amd64 2>/dev/null | head -1)")
	b=$src/$k
	cp -r "$pkgsrc" "$b"
	# dkms: MAKE[0] with ${kernelver} substituted, its leading make given -jN KERNELRELEASE.
	mk=$(conf 'MAKE\[0\]')
	mk=${mk//'${kernelver}'/$kver}
	loc=$(conf 'BUILT_MODULE_LOCATION\[0\]')
	ko=$b/${loc//'${kernelver}'/$kver}$(conf 'BUILT_MODULE_NAME\[0\]').ko
	# shellcheck disable=SC2086
	if [ -n "$kver" ] && [ -e "/lib/modules/$kver/build/Makefile" ] &&
		(cd "$b" && make -j"$(nproc)" KERNELRELEASE="$kver" ${mk#make }) >"$src/$k.log" 2>&1 &&
		modinfo -F vermagic "$ko" | grep -q "^$kver "; then
		echo "ok $k: the packaged sources build as dkms builds them ($kver, natively)"
		pass=$((pass + 1))
	else
		tail -20 "$src/$k.log" 2>/dev/null
		echo "not ok $k: the packaged sources do not build for ${kver:-(no headers of $k)}"
		fail=$((fail + 1))
	fi
done
rm -rf "$src"
# The verbs program the installed shim is preloaded into (not a file of the packages).
cargo build --release -q -p regcache-rdmatest || { echo "0 passed, 1 failed"; exit 1; }
rdmatest=$target/release/regcache-rdmatest
out=$(mktemp -d /tmp/regcache-deb-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
for k in $kernels; do
	t1=$(date +%s)
	"$HERE/run.sh" --quiet --no-module --timeout 900 --kernel "$k" --out "$out" -- \
		"$HERE/guest-rxe.sh" "$HERE/guest-deb.sh" "$debs" "$rdmatest" >/dev/null
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
	echo "# kernel $k: $p passed, $f failed in the guest; $(($(date +%s) - t1)) s"
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
