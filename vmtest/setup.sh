#!/bin/sh
# Install everything the VM harness needs (idempotent): both Debian 12
# kernels with their headers, qemu, busybox and the RDMA user-space tools
# that later tests use.  Safe to run again: apt-get only installs what is
# missing.
set -eu

PKGS="qemu-system-x86 busybox-static build-essential kmod cpio xz-utils zstd
iproute2 dkms
linux-image-amd64 linux-headers-amd64
linux-image-6.12-amd64 linux-headers-6.12-amd64
rdma-core ibverbs-utils ibverbs-providers libibverbs-dev librdmacm-dev
rdmacm-utils perftest libfabric-dev libfabric-bin unzip bc
slurm-wlm slurmctld slurmd slurm-client munge prometheus prometheus-node-exporter"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
	     grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "setup.sh: all packages present"
	exit 0
fi

echo "setup.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
echo "setup.sh: done"
