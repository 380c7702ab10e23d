// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * pmix-fence.c - does the launcher's PMIx fence wait for every rank? (vmtest/test-multinode.sh)
 *
 * Two rounds; in round R, rank R sleeps 5 s before the fence, so a fence that is a barrier keeps
 * the other rank waiting ~5 s. Open MPI 4.1's pml ucx relies on one (PMIx_Fence_nb without
 * data, after disconnecting its endpoints in MPI_Finalize). Each rank prints, per round:
 *   pmix_fence: rank K round R: rc=RC waited SECONDS s
 *   srun --mpi=pmix -N2 --ntasks-per-node=1 pmix-fence
 */
#include <pmix.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void fenced(pmix_status_t status, void *arg)
{
	(void)status;
	*(volatile int *)arg = 1;
}

static double seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	pmix_proc_t me;
	int round;

	if (PMIx_Init(&me, NULL, 0) != PMIX_SUCCESS) {
		fprintf(stderr, "pmix_fence: PMIx_Init failed\n");
		return 2;
	}
	for (round = 0; round < 2; round++) {
		volatile int done = 0;
		pmix_status_t rc;
		double t0;

		if ((int)me.rank == round)
			sleep(5);
		t0 = seconds();
		rc = PMIx_Fence_nb(NULL, 0, NULL, 0, fenced, (void *)&done);
		while (rc == PMIX_SUCCESS && !done)
			usleep(1000);
		printf("pmix_fence: rank %u round %d: rc=%d waited %.2f s\n", me.rank, round, rc,
		       seconds() - t0);
		fflush(stdout);
	}
	PMIx_Finalize(NULL, 0);
	return 0;
}
