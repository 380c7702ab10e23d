// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fake_client.c - host test of libregcache_shim.so over tests/fakeverbs.c:
 *   LD_PRELOAD=build/libregcache_shim.so build/fake_client
 * Prints one line per check and `N passed, M failed`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <infiniband/verbs.h>

#include "shim.h"
#include "tap.h"

extern int fake_regs, fake_deregs, fake_live;

#define LEN (1 << 20)
#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ)

int main(void)
{
	int (*counts)(struct shim_counts *) =
		(int (*)(struct shim_counts *))dlsym(RTLD_DEFAULT, "regcache_shim_counts");
	struct ibv_pd pd = { .context = (struct ibv_context *)&pd };
	struct ibv_mr *a, *b, *c;
	struct shim_counts t;
	char *buf, *buf2;
	uint32_t key;
	int regs;

	if (!counts) {
		printf("FAIL not run under LD_PRELOAD=libregcache_shim.so\n0 passed, 1 failed\n");
		return 1;
	}
	buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buf, 1, LEN);

	a = ibv_reg_mr(&pd, buf, LEN, RW);
	counts(&t);
	if (!t.enabled) {
		printf("SKIP the shim has no working monitor here\n0 passed, 0 failed\n");
		return 0;
	}
	CHECK(a && fake_regs == 1, "first ibv_reg_mr registers once (fake_regs=%d, re-entry guard)",
	      fake_regs);
	key = a->lkey;
	CHECK(a->addr == buf && a->length == LEN && a->pd == &pd, "wrapper has the request");
	CHECK(ibv_dereg_mr(a) == 0 && fake_deregs == 0, "dereg keeps it cached");
	a = ibv_reg_mr(&pd, buf + 4096, 8192, IBV_ACCESS_LOCAL_WRITE);
	b = ibv_reg_mr_iova2(&pd, buf, LEN, (uintptr_t)buf, RW);
	counts(&t);
	CHECK(a && b && fake_regs == 1 && a->lkey == key && b->lkey == key && t.hits == 2,
	      "sub-range and iova2 are hits (hits=%llu regs=%d)", (unsigned long long)t.hits,
	      fake_regs);
	CHECK(a != b && ibv_dereg_mr(a) == 0 && b->lkey == key && fake_deregs == 0,
	      "wrappers are independent");
	CHECK(ibv_dereg_mr(b) == 0, "second dereg");

	a = ibv_reg_mr(&pd, buf, LEN, RW | IBV_ACCESS_ON_DEMAND);
	counts(&t);
	CHECK(a && fake_regs == 2 && t.passthrough == 1, "ODP passes through");
	CHECK(ibv_dereg_mr(a) == 0 && fake_deregs == 1, "pass-through dereg reaches rdma-core");
	a = ibv_reg_mr_iova(&pd, buf, LEN, 0x1000, RW);
	CHECK(a && fake_regs == 3 && ibv_dereg_mr(a) == 0 && fake_deregs == 2,
	      "iova != addr passes through");

	/* The bug the cache exists for: unmap, map again at the same address. */
	munmap(buf, LEN);
	buf2 = mmap(buf, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		    -1, 0);
	regs = fake_regs;
	a = ibv_reg_mr(&pd, buf2, LEN, RW);
	counts(&t);
	CHECK(buf2 == buf && a && fake_regs == regs + 1 && a->lkey != key,
	      "munmap+mmap at the same address gets a fresh registration (lkey %u -> %u)", key,
	      a ? a->lkey : 0);
	CHECK(t.invalidated >= 1, "the monitor invalidated the old one (invalidated=%llu)",
	      (unsigned long long)t.invalidated);
	key = a->lkey;

	/* ibv_rereg_mr: change access on a wrapper, the pointer stays. */
	CHECK(ibv_rereg_mr(a, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
			   RW | IBV_ACCESS_REMOTE_ATOMIC) == 0 && a->addr == buf2,
	      "rereg access on a wrapper");
	CHECK(ibv_rereg_mr(a, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
			   RW | IBV_ACCESS_ON_DEMAND) == 0 && a->lkey != key,
	      "rereg to an uncacheable access holds a real MR");
	c = ibv_reg_mr(&pd, buf2, LEN, RW);
	CHECK(c && ibv_dereg_mr(c) == 0, "cached reg next to a rereg'd one");
	CHECK(ibv_dereg_mr(a) == 0, "dereg of the rereg'd wrapper");

	/* free() of a large block munmaps inside glibc, through no PLT. */
	buf = malloc(LEN);
	memset(buf, 2, LEN);
	a = ibv_reg_mr(&pd, buf, LEN, RW);
	key = a->lkey;
	ibv_dereg_mr(a);
	free(buf);
	buf2 = malloc(LEN);
	regs = fake_regs;
	a = ibv_reg_mr(&pd, buf2, LEN, RW);
	if (buf2 == buf)
		CHECK(a && fake_regs == regs + 1 && a->lkey != key,
		      "free()+malloc() at the same address gets a fresh registration");
	ibv_dereg_mr(a);
	free(buf2);

	CHECK(ibv_dealloc_pd(&pd) == 0 && fake_live == 0,
	      "ibv_dealloc_pd drops the PD's cache first (live=%d)", fake_live);
	counts(&t);
	printf("hits=%llu misses=%llu invalidated=%llu registrations=%llu deregistrations=%llu\n",
	       (unsigned long long)t.hits, (unsigned long long)t.misses,
	       (unsigned long long)t.invalidated, (unsigned long long)t.registrations,
	       (unsigned long long)t.deregistrations);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
