// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * mpi_reuse.c - two MPI ranks exchange large (rendezvous: both sides register) messages from
 * and into buffers reused the ways the torture oracle reuses memory, and check every word.
 * Plain MPI-3 C: builds against Open MPI 4.1/5, MPICH and Intel MPI (one binary per MPI ABI).
 *
 *   mpirun -np 2 ... mpi_reuse [--msgs N] [--min BYTES] [--max BYTES] [--same-buffer]
 *
 * Message m (0 <= m < N, default 40) goes from rank (m & 1) to the other rank (both
 * directions), with SIZE = min << ((m / 10) % k), k sizes from --min to --max (default 64 KiB,
 * 256 KiB, 1 MiB, 4 MiB), and uses buffer slot KIND = (m >> 1) % 5 on both ranks. Before the
 * message both ranks churn their slot of that kind:
 *   reuse    the same pages again (a legitimate registration-cache hit)
 *   malloc   free + malloc(SIZE), above the mmap threshold (fixed at 32 KiB with mallopt, so
 *            glibc maps and unmaps): new pages, usually at the old address
 *   mmap     munmap + mmap at the same address (MAP_FIXED_NOREPLACE hint)
 *   tail     mmap MAP_FIXED over the live second half of the buffer (new pages in the tail;
 *            the message is the buffer's last SIZE bytes, so it covers the tail)
 *   mremap   mremap the buffer (SIZE bytes) elsewhere (MREMAP_FIXED onto a reservation), then
 *            map new pages at the old address; the moved old pages stay alive until the
 *            slot's next churn, so a stale registration reads or writes them, not freed
 *            memory
 * The sender fills message m with word(m, i); the receiver fills its buffer with junk first,
 * then checks every word (and the received count). A cache that hands out the registration of
 * the old pages makes the NIC read the old pattern (sender) or write into the old pages
 * (receiver): the receiver sees wrong words.
 * --same-buffer (the OSU-style case): one 4 MiB buffer per rank, never freed, every message
 * from or into it (the MPI library's own cache must hit).
 *
 * Each rank prints one line on stdout:
 *   mpi_reuse: rank R msgs=N recvd=M bad=B bad_words=W remapped=X moved=Y same_buffer=0|1
 *              total_bad=T
 * (bad/bad_words: messages this rank received wrong; remapped: churns that put new pages at
 * the old address; moved: churns that landed elsewhere, which test nothing; total_bad: both
 * ranks). Exit status 0 when total_bad == 0, 1 otherwise, 2 on usage or system errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define JUNK 0xeeeeeeeeeeeeeeeeULL

enum kind { REUSE, MALLOC, MMAP, TAIL, MREMAP, NKINDS };
static const char *const kind_name[NKINDS] = { "reuse", "malloc", "mmap", "tail", "mremap" };

struct slot {
	char *p;	/* the buffer (malloc: the malloc'ed block) */
	size_t len;	/* its length */
	void *moved;	/* mremap: the old pages, moved away, alive until the next churn */
};

static int rank;
static uint64_t remapped, moved;

static uint64_t word(uint64_t msg, uint64_t i)
{
	/* Distinct per message and per word, never the receiver's junk. */
	return ((msg + 1) << 40) ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0x5a5a000000000001ULL;
}

static void fail(const char *what)
{
	fprintf(stderr, "mpi_reuse: rank %d: %s: %s\n", rank, what, strerror(errno));
	MPI_Abort(MPI_COMM_WORLD, 2);
}

/* Anonymous pages, at hint if that address is free (else anywhere). */
static void *map_at(void *hint, size_t len)
{
	void *p = mmap(hint, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0), -1, 0);

	if (p == MAP_FAILED && hint)
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	return p;
}

static void count(const void *old, const void *now)
{
	if (!old)
		return;
	if (old == now)
		remapped++;
	else
		moved++;
}

/* Churn slot s of kind k (buffer length len); returns where a message of size bytes goes. */
static char *churn(struct slot *s, enum kind k, size_t len, size_t size)
{
	char *old = s->p;

	switch (k) {
	case REUSE:
		if (!s->p) {
			s->p = map_at(NULL, len);
			s->len = len;
		}
		return s->p;
	case MALLOC:
		free(s->p);
		s->p = malloc(size);
		if (!s->p)
			fail("malloc");
		s->len = size;
		count(old, s->p);
		return s->p;
	case MMAP:
		if (s->p && munmap(s->p, s->len))
			fail("munmap");
		s->p = map_at(s->p, len);
		s->len = len;
		count(old, s->p);
		return s->p;
	case TAIL:
		if (!s->p) {
			s->p = map_at(NULL, len);
			s->len = len;
		} else {
			char *tail = s->p + len / 2;

			if (mmap(tail, len - len / 2, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != tail)
				fail("mmap MAP_FIXED over the tail");
			remapped++;
		}
		return s->p + len - size;
	case MREMAP:
		/* The buffer is exactly the message: a registration of part of it would split
		 * its VMA (the MPI library's madvise(MADV_DONTFORK)), and mremap refuses ranges
		 * that span VMAs (EFAULT). A new size: new buffer, nothing to move. */
		if (s->moved && munmap(s->moved, s->len))
			fail("munmap");
		s->moved = NULL;
		if (s->p && s->len != size) {
			if (munmap(s->p, s->len))
				fail("munmap");
			s->p = old = NULL;
		}
		if (s->p) {
			void *to = map_at(NULL, size); /* a reservation, replaced by the move */
			void *got = mremap(s->p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to);

			if (got == MAP_FAILED && errno == EFAULT) {
				/* Still more than one VMA: let them merge again. */
				madvise(s->p, size, MADV_DOFORK);
				got = mremap(s->p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
			}
			if (got == MAP_FAILED)
				fail("mremap");
			s->moved = got;
		}
		s->p = map_at(s->p, size);
		s->len = size;
		count(old, s->p);
		return s->p;
	default:
		abort();
	}
}

int main(int argc, char **argv)
{
	long msgs = 40, min = 64 << 10, max = 4 << 20, nsizes = 0;
	uint64_t bad = 0, bad_words = 0, recvd = 0, total_bad = 0;
	struct slot slots[NKINDS] = { { 0 } };
	int nranks, same = 0;
	char *shared = NULL;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	for (int a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--msgs") && a + 1 < argc)
			msgs = strtol(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--min") && a + 1 < argc)
			min = strtol(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--max") && a + 1 < argc)
			max = strtol(argv[++a], NULL, 0);
		else if (!strcmp(argv[a], "--same-buffer"))
			same = 1;
		else
			nranks = -1;
	}
	for (long s = min; s > 0 && s <= max; s <<= 2)
		nsizes++;
	if (nranks != 2 || msgs < 1 || min < 4096 || min % 4096 || max > (1L << 30) || !nsizes) {
		if (rank == 0)
			fprintf(stderr, "usage: mpirun -np 2 %s [--msgs N] [--min BYTES] "
				"[--max BYTES] [--same-buffer]\n", argv[0]);
		MPI_Finalize();
		return 2;
	}
	/* Every malloc of a test size is an mmap, every free an munmap (and the threshold stays
	 * put: glibc's dynamic threshold would otherwise move to the heap after the first free). */
	mallopt(M_MMAP_THRESHOLD, 32 << 10);
	if (same)
		shared = map_at(NULL, (size_t)max);

	for (long m = 0; m < msgs; m++) {
		int from = (int)(m & 1), tag = (int)(m & 0x7fff);
		enum kind k = (enum kind)((m >> 1) % NKINDS);
		size_t size = (size_t)min << (2 * ((m / 10) % nsizes)), n = size / 8;
		uint64_t *buf = (uint64_t *)(same ? shared : churn(&slots[k], k, (size_t)max, size));

		if (rank == from) {
			for (size_t i = 0; i < n; i++)
				buf[i] = word((uint64_t)m, i);
			MPI_Send(buf, (int)size, MPI_BYTE, 1 - from, tag, MPI_COMM_WORLD);
		} else {
			uint64_t wrong = 0, first = n;
			MPI_Status st;
			int got = -1;

			for (size_t i = 0; i < n; i++)
				buf[i] = JUNK;
			MPI_Recv(buf, (int)size, MPI_BYTE, from, tag, MPI_COMM_WORLD, &st);
			MPI_Get_count(&st, MPI_BYTE, &got);
			for (size_t i = 0; i < n; i++)
				if (buf[i] != word((uint64_t)m, i)) {
					if (!wrong)
						first = i;
					wrong++;
				}
			recvd++;
			if (wrong || got != (int)size) {
				if (bad < 5)
					fprintf(stderr,
						"mpi_reuse: rank %d message %ld (%s, %zu bytes, from "
						"rank %d): %" PRIu64 " of %zu words wrong, count %d "
						"(word %" PRIu64 ": %#" PRIx64 ", expected %#" PRIx64
						")\n", rank, m, same ? "same-buffer" : kind_name[k],
						size, from, wrong, n, got, first,
						first < n ? buf[first] : 0,
						first < n ? word((uint64_t)m, first) : 0);
				bad++;
				bad_words += wrong;
			}
		}
	}
	MPI_Allreduce(&bad, &total_bad, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
	printf("mpi_reuse: rank %d msgs=%ld recvd=%" PRIu64 " bad=%" PRIu64 " bad_words=%" PRIu64
	       " remapped=%" PRIu64 " moved=%" PRIu64 " same_buffer=%d total_bad=%" PRIu64 "\n",
	       rank, msgs, recvd, bad, bad_words, remapped, moved, same, total_bad);
	fflush(stdout);
	MPI_Finalize();
	return total_bad ? 1 : 0;
}
