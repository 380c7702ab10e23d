#!/bin/sh
# /init of the vmtest initramfs (busybox).  Loads the 9p stack, mounts the
# host's root read-only at /newroot with scratch tmpfs on top, mounts the
# results share, runs /run/vmtest/guest-job.sh in a chroot and powers off.
# The host reads the exit code from the results share.
# The root's 9p cache mode comes from the kernel command line
# (vmtest.rootcache=loose|none|mmap, run.sh --root-cache; default loose): the
# root is read-only and nothing the guest reads from it changes during a run,
# so the guest may cache its pages, attributes and lookups. The results share
# is written by both sides and stays cache=none.
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

while read -r m; do
	insmod /lib/modules/"$m" || echo "vmtest-init: insmod $m failed"
done </modules.order
echo /sbin/modprobe >/proc/sys/kernel/modprobe

opts=trans=virtio,version=9p2000.L,msize=512000
rootcache=loose
read -r cmdline </proc/cmdline
for a in $cmdline; do
	case $a in vmtest.rootcache=*) rootcache=${a#*=} ;; esac
done
if ! mount -t 9p -o "$opts,cache=$rootcache,ro" hostroot /newroot; then
	echo "vmtest-init: cannot mount host root"
	poweroff -f
fi
for d in tmp run var/tmp root; do
	mount -t tmpfs -o mode=1777 tmpfs /newroot/$d
done
chmod 700 /newroot/root
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mkdir -p /newroot/run/vmtest
mount -t 9p -o "$opts,cache=none" results /newroot/run/vmtest
# Tells the host the boot got this far: a guest that dies before this line died in the stock
# kernel's boot, before the module or the job ran, and run.sh boots it again.
echo booted >/newroot/run/vmtest/booted
hostname vmtest

chroot /newroot /bin/sh /run/vmtest/guest-job.sh </dev/null
sync
echo "vmtest-init: done"
poweroff -f
