// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * ucx_mpi_churn.c - two MPI ranks, large (rendezvous: UCX registers them) messages from and
 * into buffers that are unmapped and mapped again at the same address, every word checked.
 *
 *   mpirun -np 2 ... ucx_mpi_churn [--msgs N] [--size BYTES]
 *
 * Rank 0 sends N messages of BYTES (default 64 x 1 MiB) to rank 1. Before every even message
 * both ranks munmap their buffer and mmap a new one at the same address (new pages); before
 * every odd one they rewrite it in place (a legitimate hit for UCX's registration cache). The
 * sender fills message i with a pattern of (i, word index); the receiver fills its buffer with
 * junk first and checks every word. A registration cache that hands out the region of the old
 * pages makes the NIC read the old pattern on the sender side, or write into the old pages on
 * the receiver side: either way the receiver sees wrong words.
 *
 * Rank 1 prints one line: "ucx_mpi_churn: msgs=N bytes=S bad=B bad_words=W remapped_send=X
 * remapped_recv=Y reused_send=... reused_recv=..." (remapped: new pages at the old address;
 * the rest moved, which tests nothing). Exit status 0 when bad == 0, 1 otherwise, 2 on errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t word(uint64_t msg, uint64_t i)
{
	/* Distinct per message and per word, never the receiver's junk. */
	return (msg << 40) ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0x5a5a000000000001ULL;
}

#define JUNK 0xeeeeeeeeeeeeeeeeULL

static void *map_at(void *hint, size_t len)
{
	void *p = mmap(hint, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0), -1, 0);

	if (p == MAP_FAILED && hint) /* the address was taken meanwhile: anywhere else */
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "ucx_mpi_churn: mmap %zu: %s\n", len, strerror(errno));
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	return p;
}

/* New pages at the same address if possible. Returns the buffer; *same: it stayed put. */
static uint64_t *remap(uint64_t *buf, size_t len, int *same)
{
	void *p;

	if (munmap(buf, len)) {
		fprintf(stderr, "ucx_mpi_churn: munmap: %s\n", strerror(errno));
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	p = map_at(buf, len);
	*same = p == (void *)buf;
	return p;
}

int main(int argc, char **argv)
{
	long msgs = 64, size = 1 << 20;
	uint64_t bad = 0, bad_words = 0, remapped = 0, moved = 0;
	uint64_t peer[2] = { 0, 0 };
	int rank, nranks, same;
	uint64_t *buf;
	size_t n;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	for (int a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--msgs") && a + 1 < argc)
			msgs = strtol(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--size") && a + 1 < argc)
			size = strtol(argv[++a], NULL, 0);
	}
	if (nranks != 2 || msgs < 1 || size < 4096 || size % 8) {
		if (rank == 0)
			fprintf(stderr, "usage: mpirun -np 2 %s [--msgs N] [--size BYTES]\n",
				argv[0]);
		MPI_Finalize();
		return 2;
	}
	n = (size_t)size / 8;
	fprintf(stderr, "ucx_mpi_churn: rank %d is pid %d\n", rank, (int)getpid());
	buf = map_at(NULL, (size_t)size);
	for (long m = 0; m < msgs; m++) {
		if (m % 2 == 0) {
			buf = remap(buf, (size_t)size, &same);
			same ? remapped++ : moved++;
		}
		if (rank == 0) {
			for (size_t i = 0; i < n; i++)
				buf[i] = word((uint64_t)m, i);
			MPI_Send(buf, (int)size, MPI_BYTE, 1, (int)(m & 0x7fff), MPI_COMM_WORLD);
		} else {
			uint64_t wrong = 0;

			for (size_t i = 0; i < n; i++)
				buf[i] = JUNK;
			MPI_Recv(buf, (int)size, MPI_BYTE, 0, (int)(m & 0x7fff), MPI_COMM_WORLD,
				 MPI_STATUS_IGNORE);
			for (size_t i = 0; i < n; i++)
				wrong += buf[i] != word((uint64_t)m, i);
			if (wrong) {
				if (bad < 5)
					fprintf(stderr,
						"ucx_mpi_churn: message %ld: %" PRIu64 " of %zu words "
						"wrong (first word %#" PRIx64 ", expected %#" PRIx64
						")\n", m, wrong, n, buf[0], word((uint64_t)m, 0));
				bad++;
				bad_words += wrong;
			}
		}
	}
	/* The sender's remap counts, for the report. */
	if (rank == 0) {
		uint64_t mine[2] = { remapped, moved };

		MPI_Send(mine, 2, MPI_UINT64_T, 1, 0x7fff, MPI_COMM_WORLD);
	} else {
		MPI_Recv(peer, 2, MPI_UINT64_T, 0, 0x7fff, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		printf("ucx_mpi_churn: msgs=%ld bytes=%ld bad=%" PRIu64 " bad_words=%" PRIu64
		       " remapped_send=%" PRIu64 " remapped_recv=%" PRIu64 " moved_send=%" PRIu64
		       " moved_recv=%" PRIu64 "\n", msgs, size, bad, bad_words, peer[0], remapped,
		       peer[1], moved);
		fflush(stdout);
	}
	munmap(buf, (size_t)size);
	MPI_Finalize();
	return rank == 1 && bad ? 1 : 0;
}
