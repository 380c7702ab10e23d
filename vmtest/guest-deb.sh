#!/bin/sh
# Inside the guest (vmtest/test-deb.sh): installs the .debs of DEBDIR into an overlay of the
# read-only root (changes go to a tmpfs), as an admin would: dpkg -i, dkms builds the module for
# the running kernel, the postinst loads it. Then, against the installed files only:
# `regcache doctor`, a C program built through the installed pkg-config file that watches a
# buffer being unmapped and mapped again through ummunotify, and the installed shim preloaded
# into a verbs program. Then dpkg --purge, and nothing may be left: module unloaded, no file of
# the packages (nor dkms state) in the overlay's upper directory.
# One "ok"/"not ok" line per check.
#   guest-deb.sh DEBDIR
set -u
debs=$1
kver=$(uname -r)
ov=/tmp/deb-overlay
m=$ov/merged
ok() { echo "ok $1"; }
t0=$(date +%s)
phase() { echo "# phase: $1 at $(($(date +%s) - t0)) s"; }
nok() { echo "not ok $1${2:+: $2}"; }
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
lsmod | grep -q '^ummunotify ' && rmmod ummunotify

# --- install ----------------------------------------------------------------------------------
phase install
# (globs expanded inside the new root)
if in_root sh -c 'dpkg -i /tmp/debs/ummunotify-dkms_*.deb /tmp/debs/libregcache0_*.deb \
	/tmp/debs/libregcache-dev_*.deb /tmp/debs/regcache-tools_*.deb' >$ov/install.log 2>&1; then
	ok "dpkg -i: the four packages installed"
else
	tail -30 $ov/install.log
	nok "dpkg -i"
fi
if in_root dkms status 2>/dev/null | grep -q "ummunotify/.*$kver.*installed"; then
	ok "dkms built and installed the module for $kver"
else
	in_root dkms status
	grep -i -A5 'error\|fail' $ov/install.log | head -20
	nok "dkms module for $kver"
fi
if lsmod | grep -q '^ummunotify ' && [ -c /dev/ummunotify ]; then
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
phase use
in_root regcache doctor >$ov/doctor.log 2>&1
rc=$?
sed 's/^/# /' $ov/doctor.log
if [ $rc = 0 ] && grep -q '^OK  *ummunotify module: loaded' $ov/doctor.log &&
	grep -q '^OK  *monitor: auto picks ummunotify' $ov/doctor.log; then
	ok "installed regcache doctor: module loaded, auto picks ummunotify, exit 0"
else
	nok "installed regcache doctor" "exit $rc"
fi

cat >$m/tmp/t.c <<'EOF'
/* The installed C library: a buffer registered, unmapped and mapped again at the same
 * address must be registered anew (ummunotify reports it), and a second get of an unchanged
 * buffer must hit. */
#include <regcache.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#define LEN (1 << 20)
int main(void)
{
	struct regcache_attr a = { .size = sizeof(a), .registrar = REGCACHE_REGISTRAR_SOFTNIC,
				   .monitor = REGCACHE_MONITOR_UMMUNOTIFY };
	struct regcache_cache *c;
	struct regcache_mr *mr;
	struct regcache_stats s = { .size = sizeof(s) };
	char msg[256];
	void *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *q;
	int rc = regcache_create(&a, &c);
	if (rc) {
		regcache_last_error(msg, sizeof(msg));
		printf("create: %d %s\n", rc, msg);
		return 1;
	}
	memset(p, 1, LEN);
	for (int i = 0; i < 2; i++) {
		if (regcache_get(c, p, LEN, 1, &mr) || regcache_release(mr))
			return 2;
	}
	munmap(p, LEN);
	q = mmap(p, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	memset(q, 2, LEN);
	if (regcache_get(c, q, LEN, 1, &mr) || regcache_release(mr))
		return 3;
	regcache_stats(c, &s);
	printf("hits=%llu misses=%llu reregistrations=%llu monitor=%u\n",
	       (unsigned long long)s.hits, (unsigned long long)s.misses,
	       (unsigned long long)s.reregistrations, s.monitor);
	regcache_destroy(c);
	return !(s.hits == 1 && s.misses == 2 && s.reregistrations == 1 &&
		 s.monitor == REGCACHE_MONITOR_UMMUNOTIFY);
}
EOF
if in_root sh -c 'cc -o /tmp/t /tmp/t.c $(pkg-config --cflags --libs regcache) && /tmp/t' >$ov/t.log 2>&1; then
	ok "C program built with the installed pkg-config file: remap detected ($(tail -1 $ov/t.log))"
else
	cat $ov/t.log
	nok "C program against the installed library"
fi
shim=$(in_root sh -c 'ls /usr/lib/*/regcache/libregcache_shim.so')
if in_root env LD_PRELOAD="$shim" REGCACHE_SHIM_VERBOSE=1 ibv_devices >$ov/shim.log 2>&1; then
	ok "the installed shim preloads into a verbs program ($shim)"
else
	cat $ov/shim.log
	nok "installed shim preloaded into ibv_devices"
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
if lsmod | grep -q '^ummunotify '; then
	nok "module unloaded by the prerm"
else
	ok "module unloaded by the prerm"
fi
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
phase done
for d in dev/pts dev sys proc tmp run root; do umount $m/$d; done
umount $m
