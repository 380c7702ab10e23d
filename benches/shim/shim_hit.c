// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * shim_hit.c - the cost of a cached registration through the LD_PRELOAD shim: ITERS times
 * ibv_reg_mr + ibv_dereg_mr of the same 4 KiB buffer (a hit after the first), over the fake
 * libibverbs of mpi-shim/tests (no RDMA device). Prints ns per reg+dereg pair, the median of
 * ROUNDS rounds. Without the shim every pair is a (fake) registration.
 *
 *   LD_PRELOAD=.../libregcache_shim.so ./shim_hit [ITERS [ROUNDS]]
 *
 * Run by benches/shim-bench.sh next to `profile-real-hit` (Cache::get + release).
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	long iters = argc > 1 ? atol(argv[1]) : 1000000;
	int rounds = argc > 2 ? atoi(argv[2]) : 11;
	struct ibv_pd pd = { .context = (struct ibv_context *)&pd };
	double *per = calloc((size_t)rounds, sizeof(*per));
	char *buf;

	buf = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || !per)
		return 1;
	buf[0] = 1;
	for (int r = 0; r < rounds; r++) {
		double t0 = now_ns();

		for (long i = 0; i < iters; i++) {
			struct ibv_mr *mr = ibv_reg_mr(&pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE);

			if (!mr || ibv_dereg_mr(mr))
				return 1;
		}
		per[r] = (now_ns() - t0) / (double)iters;
	}
	qsort(per, (size_t)rounds, sizeof(*per), cmp);
	printf("%.1f\n", per[rounds / 2]);
	return 0;
}
