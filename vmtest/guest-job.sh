#!/bin/sh
# Runs inside the guest, chrooted into the host's root: loads the module,
# runs the job written by run.sh (/run/vmtest/job.sh), unloads the module
# and leaves rc, dmesg and unload status in /run/vmtest for the host.
. /run/vmtest/job.sh
export VMTEST_MODULE

if [ -n "$VMTEST_RW" ]; then
	# Under /tmp, /run, ... (tmpfs in the guest) the directory is missing.
	mkdir -p "$VMTEST_RW" 2>/dev/null
	if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none \
		rwshare "$VMTEST_RW"; then
		echo "vmtest: cannot mount $VMTEST_RW"
		echo 126 >/run/vmtest/rc
		exit 0
	fi
fi
if [ -n "$VMTEST_MODULE" ]; then
	if ! insmod "$VMTEST_MODULE"; then
		echo "vmtest: insmod $VMTEST_MODULE failed"
		dmesg >/run/vmtest/dmesg
		echo 126 >/run/vmtest/rc
		exit 0
	fi
	[ -c /dev/ummunotify ] || echo "vmtest: /dev/ummunotify missing"
fi
cd "$VMTEST_CWD" 2>/dev/null || cd /

echo "vmtest: running on $(uname -r): $*"
{ "$@"; echo $? >/tmp/.vmtest-rc; } 2>&1 | tee /run/vmtest/output.log
rc=$(cat /tmp/.vmtest-rc 2>/dev/null || echo 125)
echo "vmtest: command exited with $rc"

if [ -n "$VMTEST_MODULE" ] && [ "$VMTEST_UNLOAD" = 1 ]; then
	n=0
	until rmmod ummunotify 2>/dev/null; do
		n=$((n + 1))
		if [ $n -ge 20 ]; then
			echo "rmmod ummunotify failed (refcount $(cat /sys/module/ummunotify/refcnt 2>/dev/null))" \
				>/run/vmtest/unload
			break
		fi
		sleep 0.5
	done
fi
dmesg >/run/vmtest/dmesg
echo $rc >/run/vmtest/rc
sync
