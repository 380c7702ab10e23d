#!/bin/sh
# One MPI rank of vmtest/test-stacks.sh, for every launcher there (Open MPI 4.1 and 5, MPICH's
# and Intel MPI's hydra): rank 0 uses rxe0 (veth0, 10.9.0.1), rank 1 rxe1 (veth1, 10.9.0.2), so
# that the two ranks talk over Soft-RoCE rather than through one device's loopback:
#   UCX        UCX_NET_DEVICES=rxe0:1 / rxe1:1
#   libfabric  FI_VERBS_DEVICE_NAME=rxe0 / rxe1 (verbs domain), FI_VERBS_IFACE=veth0 / veth1
# The shim is preloaded only into the ranks (not the launcher nor its proxies) when
# REGCACHE_TEST_PRELOAD is set.
#   mpirun ... -x REGCACHE_TEST_PRELOAD=.../libregcache_shim.so vmtest/stack-rank.sh PROG ARGS...
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}
case $rank in
0) dev=rxe0 if=veth0 ;;
*) dev=rxe1 if=veth1 ;;
esac
UCX_NET_DEVICES=$dev:1
FI_VERBS_DEVICE_NAME=$dev
FI_VERBS_IFACE=$if
export UCX_NET_DEVICES FI_VERBS_DEVICE_NAME FI_VERBS_IFACE
if [ -n "${REGCACHE_TEST_PRELOAD:-}" ]; then
	LD_PRELOAD=$REGCACHE_TEST_PRELOAD
	export LD_PRELOAD
fi
exec "$@"
