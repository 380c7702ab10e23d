#!/bin/bash
# Run a host command inside a Debian kernel booted under qemu (TCG), with
# the freshly built ummunotify module loaded.
#
#   vmtest/run.sh --kernel 6.1|6.12|FULL-VERSION [options] [--] CMD [ARGS...]
#
# The guest sees the host's root read-only over 9p (so host binaries and
# scripts run as is), with tmpfs on /tmp /run /var/tmp /root, and the
# working directory of the caller as its working directory.  The command
# runs as root, stdin from /dev/null; its output goes to this terminal.
#
# Options:
#   --kernel K     6.1, 6.12 or a directory name under /usr/lib/modules
#   --timeout S    kill the guest after S seconds (default 600): exit 124
#   --mem M        guest memory in MiB (default 2048)
#   --smp N        guest CPUs (default 2)
#   --icount S     count time in instructions: the guest's clock advances
#                  2^S ns per guest instruction executed (qemu -icount, one
#                  TCG thread, idle time skipped), so a ratio of two timings
#                  is a ratio of instruction counts, free of TCG's uneven
#                  slowdown of user code against system calls (benchmarks)
#   --cpu C        qemu's -cpu model and flags (default max); with --icount,
#                  max,erms=off,fsrm=off keeps the kernel's page clears and
#                  copies off `rep movsb`/`stosb`, which qemu counts one byte
#                  a step
#   --numa N       split the memory into N NUMA nodes (default 1); the CPUs are all
#                  on node 0 (qemu's CPUs share a cache, so they must share a node)
#   --out DIR      host directory shared read-write with the guest at
#                  $VMTEST_OUT (default: a temporary directory, removed)
#   --rw DIR       also share host DIR read-write at the same path
#   -e NAME=VALUE  export a variable to the command (repeatable)
#   --netdev SPEC  one NIC on qemu netdev SPEC (e.g.
#                  socket,udp=127.0.0.1:P,localaddr=127.0.0.1:Q: a point-to-point
#                  link to another guest); --mac sets its MAC (default qemu's),
#                  --nic-model the device (default virtio-net-pci; e1000, ...)
#   --root-cache C 9p cache mode of the guest's read-only root: loose
#                  (default: pages, attributes and lookups cached in the
#                  guest; the root must not change during the run), none
#                  (every access goes to the host) or mmap; the default
#                  can be set with VMTEST_ROOT_CACHE
#   --no-module    do not build nor load ummunotify.ko
#   --no-build     load the already built module, do not run make
#   --no-unload    do not rmmod the module after the command
#   --quiet        do not copy the guest console to stdout; print only the
#                  command's output, after the run
#
# Exit status: the command's, unless the guest kernel logged a WARNING,
# BUG, Oops or Call Trace (exit 99, even if the command passed), the
# module could not be unloaded after the command (98), the guest timed out
# (124), died without reporting (125) or the module did not load (126).
# The console is kept in $VMTEST_OUT/console.log, the kernel log in
# $VMTEST_OUT/dmesg and the command's output in $VMTEST_OUT/output.log.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
KMOD=$ROOT/kmod
CACHE=${VMTEST_CACHE:-/tmp/regcache-vmtest}

kernel="" timeout=600 icount="" cpu=max mem=2048 smp=2 out="" rw="" quiet=0 netdev="" mac="" nic_model=virtio-net-pci
rootcache=${VMTEST_ROOT_CACHE:-loose}
module=1 build=1 unload=1
envs=()
numa=1

die() { echo "vmtest: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=$2; shift 2 ;;
	--kernel=*) kernel=${1#*=}; shift ;;
	--timeout) timeout=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--numa) numa=$2; shift 2 ;;
	--icount) icount=$2; shift 2 ;;
	--cpu) cpu=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--rw) rw=$2; shift 2 ;;
	--netdev) netdev=$2; shift 2 ;;
	--mac) mac=$2; shift 2 ;;
	--nic-model) nic_model=$2; shift 2 ;;
	--root-cache) rootcache=$2; shift 2 ;;
	-e) envs+=("$2"); shift 2 ;;
	--no-module) module=0; shift ;;
	--no-build) build=0; shift ;;
	--no-unload) unload=0; shift ;;
	--quiet) quiet=1; shift ;;
	--) shift; break ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || die "no command given (see --help)"
[ -n "$kernel" ] || die "--kernel 6.1|6.12 is required"
case $rootcache in loose|none|mmap) ;; *) die "--root-cache loose|none|mmap, not $rootcache" ;; esac
case $icount in "" | [0-9] | 10) ;; *) die "--icount takes a shift of 0..10, not $icount" ;; esac

# Resolve the kernel: the Debian ABI number moves with updates.
resolve_kver() {
	local d
	if [ -d "/usr/lib/modules/$1" ]; then echo "$1"; return; fi
	for d in /usr/lib/modules/"$1".*-amd64 /usr/lib/modules/"$1".*+deb*-amd64; do
		[ -d "$d" ] && [ -e "/boot/vmlinuz-${d##*/}" ] && { echo "${d##*/}"; return; }
	done
}
KVER=$(resolve_kver "$kernel" | tail -n1)
[ -n "$KVER" ] || die "kernel $kernel not installed (run vmtest/setup.sh)"
VMLINUZ=/boot/vmlinuz-$KVER
[ -r "$VMLINUZ" ] || die "$VMLINUZ missing"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (run vmtest/setup.sh)"
[ -x /bin/busybox ] || die "busybox-static missing (run vmtest/setup.sh)"

# Serialize module and initramfs builds between concurrent callers.
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9

KO=$KMOD/build/$KVER/ummunotify.ko
if [ $module = 1 ] && [ $build = 1 ]; then
	make -s -C "$KMOD" KVER="$KVER" modules >"$CACHE/build.log" 2>&1 ||
		{ cat "$CACHE/build.log" >&2; die "module build failed for $KVER"; }
fi
[ $module = 0 ] || [ -r "$KO" ] || die "$KO not built"

# ---- initramfs: busybox, the 9p stack of this kernel, /init ----------------
# Named after what goes into it (this script and guest-init.sh): checkouts with different
# versions of them share $CACHE without booting each other's /init.
INITRD=$CACHE/initrd-$KVER-$(cat "$0" "$HERE/guest-init.sh" | sha1sum | cut -c1-12).img
build_initrd() {
	local w=$CACHE/initrd-$KVER.d moddir=/usr/lib/modules/$KVER m f
	local -A seen=()
	local order=()
	rm -rf "$w"
	mkdir -p "$w"/{bin,sbin,dev,proc,sys,newroot,lib/modules}
	cp /bin/busybox "$w/bin/busybox"
	for f in sh mount umount insmod mkdir chroot poweroff cat echo sleep \
		 mknod sync dmesg hostname; do
		ln -s busybox "$w/bin/$f"
	done
	# Kernel auto-loading runs /proc/sys/kernel/modprobe in this root.
	cat >"$w/sbin/modprobe" <<-'EOF'
	#!/bin/sh
	exec chroot /newroot /sbin/modprobe "$@"
	EOF
	chmod +x "$w/sbin/modprobe"

	# Load order from modules.dep: dependencies first.
	add_mod() {
		local path=$1 dep
		[ -n "${seen[$path]:-}" ] && return
		seen[$path]=1
		# shellcheck disable=SC2013 # one line: the dependencies, space separated
		for dep in $(grep "^$path:" "$moddir/modules.dep" | cut -d: -f2); do
			add_mod "$dep"
		done
		order+=("$path")
	}
	for m in virtio_pci 9pnet_virtio 9p; do
		f=$(grep -E "(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | cut -d: -f1)
		[ -n "$f" ] && add_mod "$f"
	done
	: >"$w/modules.order"
	for f in "${order[@]}"; do
		m=$(basename "$f"); m=${m%.xz}; m=${m%.zst}; m=${m%.gz}
		case "$f" in
		*.xz) xz -dc "$moddir/$f" >"$w/lib/modules/$m" ;;
		*.zst) zstd -qdc "$moddir/$f" >"$w/lib/modules/$m" ;;
		*.gz) gzip -dc "$moddir/$f" >"$w/lib/modules/$m" ;;
		*) cp "$moddir/$f" "$w/lib/modules/$m" ;;
		esac
		echo "$m" >>"$w/modules.order"
	done
	cp "$HERE/guest-init.sh" "$w/init"
	chmod +x "$w/init"
	(cd "$w" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD.tmp" &&
		mv "$INITRD.tmp" "$INITRD"
	rm -rf "$w"
}
if [ ! -s "$INITRD" ]; then
	build_initrd || die "initramfs build failed"
fi
flock -u 9

# ---- the job: what the guest runs, and where it reports -------------------
keep_out=1
if [ -z "$out" ]; then
	out=$(mktemp -d /tmp/vmtest-out.XXXXXX)
	keep_out=0
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/rc" "$out/dmesg" "$out/console.log" "$out/unload" "$out/output.log" "$out/booted" \
	"$out"/console.boot-*.log

# The guest puts tmpfs over /tmp, /run, /var/tmp and /root: a checkout there (CI clones into a
# fresh folder that may be one of them) would be invisible, so share it read-write at its path.
case "$ROOT/" in
/tmp/*|/run/*|/var/tmp/*|/root/*)
	if [ -z "$rw" ]; then
		rw=$ROOT
	else
		case "$ROOT/" in "$(cd "$rw" && pwd)"/*) ;; *)
			die "the checkout $ROOT is under a guest tmpfs and --rw $rw does not contain it" ;;
		esac
	fi ;;
esac
{
	echo "#!/bin/sh"
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	echo "export HOME=/root TERM=dumb VMTEST_OUT=/run/vmtest VMTEST_KVER=$KVER"
	echo "export VMTEST_KERNEL=$kernel LANG=C.UTF-8"
	for e in "${envs[@]+"${envs[@]}"}"; do
		printf 'export %q\n' "$e"
	done
	printf 'VMTEST_MODULE=%q\n' "$([ $module = 1 ] && echo "$KO")"
	printf 'VMTEST_UNLOAD=%s\n' "$unload"
	printf 'VMTEST_CWD=%q\n' "$PWD"
	printf 'VMTEST_RW=%q\n' "$rw"
	printf 'set --'
	printf ' %q' "$@"
	echo
} >"$out/job.sh"
cp "$HERE/guest-job.sh" "$out/guest-job.sh"

virtfs_rw=()
if [ -n "$rw" ]; then
	rw=$(cd "$rw" && pwd) || die "--rw $rw: no such directory"
	virtfs_rw=(-virtfs "local,path=$rw,mount_tag=rwshare,security_model=none,multidevs=remap")
fi

# No NIC unless asked: the guest's only link is the one the caller made.
nic=(-nic none)
[ -z "$netdev" ] || nic=(-netdev "$netdev,id=n0" -device "$nic_model,netdev=n0${mac:+,mac=$mac}")

console=$out/console.log
[ $quiet = 1 ] && sink=/dev/null || sink=/dev/stdout

# NUMA nodes: equal shares of the memory (move_pages needs a second node to migrate to).
numa_args=()
if [ "$numa" -gt 1 ]; then
	mem=$((mem / numa * numa))
	cpus=",cpus=0-$((smp - 1))"
	for ((i = 0; i < numa; i++)); do
		numa_args+=(-object "memory-backend-ram,id=numa$i,size=$((mem / numa))M"
			-numa "node,nodeid=$i,memdev=numa$i$cpus")
		cpus=""
	done
fi

# One guest at a time on this 2-core machine: later callers wait here (flock), so parallel test
# scripts queue instead of starving each other's TCG guests into timeouts.
exec 8>"${VMTEST_LOCK:-/tmp/regcache-vmtest.lock}"
flock 8
if [ -n "$icount" ]; then
	accel=(-accel tcg,thread=single -icount "shift=$icount,align=off,sleep=off")
else
	accel=(-accel tcg,thread=multi)
fi
boot() {
	timeout -k 10 "$timeout" qemu-system-x86_64 \
		"${accel[@]}" -cpu "$cpu" -smp "$smp" -m "$mem" \
		"${numa_args[@]+"${numa_args[@]}"}" \
		-kernel "$VMLINUZ" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 loglevel=5 nowatchdog rcupdate.rcu_cpu_stall_timeout=300 mitigations=off vmtest.rootcache=$rootcache" \
		-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$out,mount_tag=results,security_model=none,multidevs=remap" \
		"${virtfs_rw[@]+"${virtfs_rw[@]}"}" \
		-nographic -serial stdio -no-reboot "${nic[@]}" -monitor none \
		</dev/null 2>&1 | tee "$console" >"$sink"
	qrc=${PIPESTATUS[0]}
}
# A guest that dies in the stock kernel's boot (seen in CI on 6.12: an int3 Oops and a panic
# during the initcalls, qemu exits 0, /init never ran) says nothing about the code under test:
# /init marks the point after which the module and the job can run ("booted"), and only a guest
# that died, not timed out, before it is booted again, twice at most. Each failed boot's console
# is kept (console.boot-N.log) and what it logged is shown below.
tries=0
while :; do
	boot
	if [ -s "$out/rc" ] || [ -e "$out/booted" ] || [ "$qrc" = 124 ] || [ "$qrc" = 137 ] ||
		[ $tries -ge 2 ]; then
		break
	fi
	tries=$((tries + 1))
	mv "$console" "$out/console.boot-$tries.log"
	echo "vmtest: the guest died while booting $KVER (qemu exit $qrc), before /init reached" \
		"the job; booting again ($tries of 2)" >&2
done

[ $quiet = 1 ] && [ -r "$out/output.log" ] && cat "$out/output.log"

status=0
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "vmtest: FAIL: guest timed out after ${timeout}s ($KVER)" >&2
	status=124
elif [ ! -s "$out/rc" ]; then
	where="after /init reached the job"
	[ -e "$out/booted" ] || where="while booting, $((tries + 1)) boots"
	echo "vmtest: FAIL: guest died without reporting (qemu exit $qrc, $KVER, $where); see console" >&2
	tail -n 30 "$console" >&2
	status=125
else
	status=$(cat "$out/rc")
fi

# Any kernel warning fails the run, whatever the command said.
pattern='WARNING:|BUG:|Oops|Call Trace|general protection fault|kernel BUG|UBSAN:|KASAN:|list_add corruption|list_del corruption|leaked|still has objects'
logs=("$console" "$out/dmesg")
if grep -aEq "$pattern" "${logs[@]}" 2>/dev/null; then
	echo "vmtest: FAIL: kernel log of $KVER shows a warning:" >&2
	grep -aE -m 20 "$pattern" "${logs[@]}" >&2 2>/dev/null
	[ "$status" = 0 ] && status=99
fi
# A boot that died before /init's mark ran nothing of ours (the module loads after it): what
# its kernel logged is shown, not held against the run. Seen on 6.12 under multi-threaded TCG:
# "Oops: int3" in sched_clock_cpu during the initcalls, the kernel patching code that another
# vCPU is running, then a panic.
for f in "$out"/console.boot-*.log; do
	[ -e "$f" ] || continue
	grep -aE -m 5 "$pattern|Kernel panic" "$f" | sed "s|^|vmtest: the boot that died (${f##*/}): |" >&2
done
if [ -s "$out/unload" ]; then
	echo "vmtest: FAIL: $(cat "$out/unload")" >&2
	[ "$status" = 0 ] && status=98
fi

[ $keep_out = 0 ] && rm -rf "$out"
exit "$status"
