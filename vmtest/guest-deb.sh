#!/bin/sh
# Inside the guest, after guest-rxe.sh (vmtest/test-deb.sh): installs the .debs of DEBDIR into an
# overlay of the read-only root (changes go to a tmpfs), as an admin would: dpkg -i, dkms builds
# the module for the running kernel, the postinst loads it. Then, against the installed files
# only: `regcache doctor`, the C ABI test suite (ffi/tests/run-c-tests.sh --installed: header,
# library and pkg-config file of the packages, with REGCACHE_MONITOR=ummunotify so that every
# cache uses the installed module) and the installed shim preloaded into an unmodified verbs
# program that reuses addresses (RDMATEST, regcache-rdmatest with its own cache off, over
# rxe0/rxe1), with its negative control. Then dpkg --purge, and nothing may be left: module
# unloaded, no file of the packages (nor dkms state) in the overlay's upper directory.
# One "ok"/"not ok" line per check, "# phase NAME: N s" per phase.
#   guest-deb.sh DEBDIR RDMATEST
set -u
debs=$1 rdmatest=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
kver=$(uname -r)
ov=/tmp/deb-overlay
m=$ov/merged
ok() { echo "ok $1"; }
nok() { echo "not ok $1${2:+: $2}"; }
t0=$(date +%s) tp=$t0 pname=setup
phase() {
	echo "# phase $pname: $(($(date +%s) - tp)) s"
	pname=$1 tp=$(date +%s)
}
in_root() { chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	DEBIAN_FRONTEND=noninteractive "$@"; }

mkdir -p $ov/upper $ov/work $m
if ! mount -t overlay overlay -o lowerdir=/,upperdir=$ov/upper,workdir=$ov/work $m; then
	nok "overlay of / mounted" "mount -t overlay failed"
	exit 0
fi
ok "overlay of / mounted"
for d in proc sys dev dev/pts; do mount --bind /$d $m/$d || nok "bind mount /$d"; done
# bash's process substitution (dkms) needs /dev/fd, which only udev would create.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
in_root sh -c 'test -r /proc/self/status' || nok "/proc in the new root"
for d in tmp run root; do mount -t tmpfs tmpfs $m/$d; done
mkdir -p $m/tmp/debs && cp "$debs"/*.deb $m/tmp/debs/
# man-db's trigger rebuilds every index: minutes under emulation, and nothing to test.
rm -f $m/var/lib/man-db/auto-update
# The host's root has the headers of both Debian kernels, so dkms's postinst would also build
# for the newest one (6.12 in the 6.1 guest): its own guest tests that build. This node runs
# one kernel: the other kernels' configs (what dkms looks for) are hidden in the overlay.
for c in "$m"/boot/config-*; do
	[ "$c" = "$m/boot/config-$kver" ] || rm -f "$c"
done
# dkms runs depmod -a after installing and after removing the module: that reads all of Debian's
# own modules (~4,000; xz-compressed on 6.12, each decompressed: minutes under emulation) to
# index them again, unchanged. That work is not what is tested: depmod is told to skip them
# (kernel/), so it indexes what dkms installed (updates/dkms/), which is what modprobe needs here.
# (Removed again before the leftover check.)
depmodconf=$m/etc/depmod.d/zz-vmtest-deb.conf
mkdir -p "${depmodconf%/*}" && echo "exclude kernel" >"$depmodconf"
[ -d /sys/module/ummunotify ] && rmmod ummunotify

# --- install ----------------------------------------------------------------------------------
phase install
# (globs expanded inside the new root)
# (each output line stamped with the seconds since the phase began)
stamp() { while IFS= read -r l; do echo "$(($(date +%s) - tp))s $l"; done; }
{
	in_root sh -c 'dpkg -i /tmp/debs/ummunotify-dkms_*.deb /tmp/debs/libregcache0_*.deb \
		/tmp/debs/libregcache-dev_*.deb /tmp/debs/regcache-tools_*.deb'
	echo $? >$ov/install.rc
} 2>&1 | stamp >$ov/install.log
if [ "$(cat $ov/install.rc)" = 0 ]; then
	ok "dpkg -i: the four packages installed"
else
	tail -30 $ov/install.log
	nok "dpkg -i" "exit $(cat $ov/install.rc)"
fi
grep -E '^[0-9]+s (Unpacking|Setting up|Building|Installing to|depmod|Done|Processing)' \
	$ov/install.log | sed 's/^/# dpkg: /'
if in_root dkms status 2>/dev/null | grep -q "ummunotify/.*$kver.*installed"; then
	ok "dkms built and installed the module for $kver"
else
	in_root dkms status
	grep -i -A5 'error\|fail' $ov/install.log | head -20
	nok "dkms module for $kver"
fi
if [ -d /sys/module/ummunotify ] && [ -c /dev/ummunotify ]; then
	ok "the postinst loaded the module: /dev/ummunotify is there"
else
	nok "module loaded by the postinst"
fi
modpath=$(in_root modinfo -n ummunotify 2>/dev/null)
case $modpath in
*/updates/dkms/*) ok "modinfo: the module is dkms's ($modpath)" ;;
*) nok "modinfo ummunotify" "$modpath" ;;
esac

# --- the installed files at work -----------------------------------------------------------------
phase doctor
in_root regcache doctor >$ov/doctor.log 2>&1
rc=$?
sed 's/^/# /' $ov/doctor.log
if [ $rc = 0 ] && grep -q '^OK  *ummunotify module: loaded' $ov/doctor.log &&
	grep -q '^OK  *monitor: auto picks ummunotify' $ov/doctor.log; then
	ok "installed regcache doctor: module loaded, auto picks ummunotify, exit 0"
else
	nok "installed regcache doctor" "exit $rc"
fi

phase c-abi
# The checkout's tests, compiled and run against the packages' header, pkg-config file and
# library (no file of the checkout's build).
in_root env REGCACHE_MONITOR=ummunotify "$root/ffi/tests/run-c-tests.sh" --installed \
	>$ov/c.log 2>&1
rc=$?
sed -n -e 's/^ok /ok C ABI (installed): /p' -e 's/^not ok /not ok C ABI (installed): /p' \
	-e 's/^#/# C ABI:/p' -e 's/^\([0-9]* passed, [0-9]* failed\)$/# C ABI suite: \1/p' $ov/c.log
if [ $rc != 0 ] && ! grep -q '^not ok ' $ov/c.log; then
	tail -20 $ov/c.log | sed 's/^/#   /'
	nok "C ABI suite (installed)" "exit $rc"
fi

phase shim
# The installed shim in an unmodified verbs program (regcache-rdmatest with its own cache off:
# ibv_reg_mr/ibv_dereg_mr around every transfer) whose buffers are unmapped and mapped again at
# the same addresses: every transfer checked byte for byte, the shim's caches must hit, and see
# the module's invalidations.
shim=$(in_root sh -c 'ls /usr/lib/*/regcache/libregcache_shim.so')
shimrun() { # OUTFILE TRANSFERS [ENV...]
	f=$1 n=$2
	shift 2
	in_root env REGCACHE_MONITOR=ummunotify REGCACHE_SHIM_VERBOSE=1 LD_PRELOAD="$shim" "$@" \
		timeout 300 "$here/guest-rdma.sh" pair "$rdmatest" 7480 --monitor none \
		--transfers "$n" --fork-every 0 >"$f" 2>&1
}
# The shim's summaries (one per process) added up: field NAME.
shimsum() { sed -n "s/^regcache_shim: pid .* $1=\([0-9]*\) .*/\1/p" "$2" | awk '{ s += $1 } END { print s + 0 }'; }
shimrun $ov/shim.log "${DEB_SHIM_TRANSFERS:-1000}"
rc=$?
grep -E '^(RESULT|regcache_shim: pid)' $ov/shim.log | sed 's/^/#   shim: /'
hits=$(shimsum hits $ov/shim.log) inval=$(shimsum invalidated $ov/shim.log)
if [ $rc = 0 ] && grep -q '^RESULT .* corruptions=0 .*remote_errors=0 failures=0' $ov/shim.log; then
	ok "installed shim ($shim): every transfer intact (exit 0, 0 corruptions)"
else
	tail -20 $ov/shim.log | sed 's/^/#   /'
	nok "installed shim: transfers intact" "exit $rc"
fi
if [ "$(grep -c '^regcache_shim: pid .* enabled ' $ov/shim.log)" = 2 ] && [ "$hits" -gt 0 ] &&
	[ "$inval" -gt 0 ]; then
	ok "installed shim: both processes cached (hits=$hits), reused addresses invalidated ($inval)"
else
	nok "installed shim: caching" "hits=$hits invalidated=$inval"
fi
# Negative control: the same with the shim's caches told to ignore the module must corrupt.
shimrun $ov/shim-neg.log "${DEB_SHIM_NEG_TRANSFERS:-500}" REGCACHE_SHIM_DANGER_IGNORE_INVALIDATIONS=1
rc=$?
grep -E '^RESULT' $ov/shim-neg.log | sed 's/^/#   negative: /'
if [ $rc != 0 ] && grep -qE '^RESULT .*(corruptions=[1-9]|remote_errors=[1-9])' $ov/shim-neg.log; then
	ok "installed shim, negative control (invalidations ignored): stale registrations detected"
else
	tail -20 $ov/shim-neg.log | sed 's/^/#   /'
	nok "installed shim, negative control" "exit $rc, no corruption detected"
fi

# --- removal ---------------------------------------------------------------------------------
phase removal
if in_root dpkg --purge regcache-tools libregcache-dev libregcache0 ummunotify-dkms \
	>$ov/purge.log 2>&1; then
	ok "dpkg --purge: the four packages removed"
else
	tail -30 $ov/purge.log
	nok "dpkg --purge"
fi
if [ -d /sys/module/ummunotify ]; then
	nok "module unloaded by the prerm"
else
	ok "module unloaded by the prerm"
fi
rm -f "$depmodconf"
# Every file the install wrote is in the upper directory; what may stay is dpkg's and the
# system's bookkeeping (databases, logs, caches, depmod's indexes, ld.so.cache).
left=$(cd $ov/upper && find . \( -type f -o -type l \) | grep -v \
	-e '^\./var/lib/dpkg/' -e '^\./var/log/' -e '^\./var/cache/' -e '^\./etc/ld\.so\.cache$' \
	-e '^\./usr/lib/modules/[^/]*/modules\.' -e '^\./lib/modules/[^/]*/modules\.' \
	-e '^\./var/lib/man-db/' -e '^\./var/lib/dkms/[^/]*$')
if [ -z "$left" ]; then
	ok "nothing left behind (upper directory: bookkeeping only)"
else
	echo "$left" | head -20 | sed 's/^/# left: /'
	nok "files left behind after purge"
fi
if in_root modinfo ummunotify >/dev/null 2>&1 && [ "$(in_root modinfo -n ummunotify)" != "${modpath}" ] ||
	! in_root modinfo ummunotify >/dev/null 2>&1; then
	ok "the dkms module is gone"
else
	nok "the dkms module is still installed"
fi
phase end
echo "# guest-deb.sh: $(($(date +%s) - t0)) s, guest up $(cut -d. -f1 /proc/uptime) s"
for d in dev/pts dev sys proc tmp run root; do umount $m/$d; done
umount $m
