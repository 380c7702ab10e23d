// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fakeverbs.c - a stand-in libibverbs for host tests of the shim (no RDMA device needed).
 * Like rdma-core 44, its ibv_reg_mr calls ibv_reg_mr_iova2 through the PLT. Each real
 * registration gets a new lkey; fake_regs/fake_deregs count them.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <infiniband/verbs.h>

int fake_regs, fake_deregs, fake_live;
static uint32_t next_key = 100;

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
				unsigned int access)
{
	struct ibv_mr *mr;

	(void)iova;
	(void)access;
	mr = calloc(1, sizeof(*mr));
	if (!mr) {
		errno = ENOMEM;
		return NULL;
	}
	mr->pd = pd;
	mr->context = pd->context;
	mr->addr = addr;
	mr->length = length;
	mr->lkey = mr->rkey = __atomic_fetch_add(&next_key, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&fake_regs, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&fake_live, 1, __ATOMIC_RELAXED);
	return mr;
}

#undef ibv_reg_mr
struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, (uintptr_t)addr, (unsigned int)access);
}

#undef ibv_reg_mr_iova
struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
			       int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned int)access);
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	if (!mr || mr->lkey < 100)
		return EINVAL;
	mr->lkey = 0;
	free(mr);
	__atomic_fetch_add(&fake_deregs, 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&fake_live, 1, __ATOMIC_RELAXED);
	return 0;
}

int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr, size_t length,
		 int access)
{
	(void)mr;
	(void)flags;
	(void)pd;
	(void)addr;
	(void)length;
	(void)access;
	return IBV_REREG_MR_ERR_INPUT;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
	(void)pd;
	return fake_live ? EBUSY : 0;
}
