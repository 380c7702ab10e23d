#!/bin/sh
# One MPI rank of vmtest/test-ucx.sh: rank 0 uses rxe0 (10.9.0.1), rank 1 rxe1 (10.9.0.2),
# so that the two ranks talk over Soft-RoCE rather than through one device's loopback; the
# shim is preloaded only into the ranks (not mpirun/orted) when REGCACHE_TEST_PRELOAD is set.
#   mpirun ... -x REGCACHE_TEST_PRELOAD=.../libregcache_shim.so vmtest/ucx-rank.sh PROGRAM ARGS...
case ${OMPI_COMM_WORLD_RANK:-0} in
0) UCX_NET_DEVICES=rxe0:1 ;;
*) UCX_NET_DEVICES=rxe1:1 ;;
esac
export UCX_NET_DEVICES
if [ -n "${REGCACHE_TEST_PRELOAD:-}" ]; then
	LD_PRELOAD=$REGCACHE_TEST_PRELOAD
	export LD_PRELOAD
fi
exec "$@"
