// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fakeucx.c - stand-ins for UCX's libucm.so.0, libucs.so.0 and libucp.so.0 (built from this one
 * file with -DFAKE_UCM, -DFAKE_UCS, -DFAKE_UCP), for host tests of the shim's UCX bridge
 * without UCX or an RDMA device. They model only what the bridge relies on (UCX 1.13):
 * - libucm: ucm_set_event_handler() "installs hooks" unless one of the events was declared
 *   external first; ucm_vm_munmap() runs the UCM_EVENT_VM_UNMAPPED handlers.
 * - libucs: an rcache whose ucs_rcache_get() returns a cached region without calling
 *   ibv_reg_mr (a hit), registers through ibv_reg_mr on a miss, drops regions its unmap
 *   handler was told about, and deregisters them later (never inside the handler), as UCX's
 *   GC list does.
 * - libucp: ucp_get_version() returns $FAKEUCX_VERSION ("1.13.1" when unset).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_VM_UNMAPPED (1 << 17)

typedef void (*fake_cb)(int event, void *event_data, void *arg);

/* What ucm_vm_munmap hands the handlers (UCX's ucm_event_t.vm_unmapped, simplified). */
struct fake_unmapped {
	void *address;
	size_t size;
};

#ifdef FAKE_UCM
static int external;
static struct {
	int events;
	fake_cb cb;
	void *arg;
} handlers[16];
static int nhandlers;
int fakeucm_hooks_installed;	/* a handler subscribed without the event being external */
int fakeucm_external_at_subscribe;	/* the external events when the first handler came */
int fakeucm_vm_munmap_calls;
uintptr_t fakeucm_last_addr;
size_t fakeucm_last_size;

void ucm_set_external_event(int events)
{
	external |= events;
}

int ucm_set_event_handler(int events, int priority, fake_cb cb, void *arg)
{
	(void)priority;
	if (nhandlers == 0)
		fakeucm_external_at_subscribe = external;
	if (!(events & external))
		fakeucm_hooks_installed = 1;
	if (nhandlers == 16)
		return -4;
	handlers[nhandlers].events = events;
	handlers[nhandlers].cb = cb;
	handlers[nhandlers].arg = arg;
	nhandlers++;
	return 0;
}

void ucm_vm_munmap(void *addr, size_t length)
{
	struct fake_unmapped ev = { addr, length };

	__atomic_fetch_add(&fakeucm_vm_munmap_calls, 1, __ATOMIC_RELAXED);
	fakeucm_last_addr = (uintptr_t)addr;
	fakeucm_last_size = length;
	for (int i = 0; i < nhandlers; i++)
		if (handlers[i].events & FAKE_VM_UNMAPPED)
			handlers[i].cb(FAKE_VM_UNMAPPED, &ev, handlers[i].arg);
}
#endif

#ifdef FAKE_UCS
#include <infiniband/verbs.h>

int ucm_set_event_handler(int events, int priority, fake_cb cb, void *arg);

/* What the test passes as ucs_rcache_params_t. */
struct fake_rcache_params {
	struct ibv_pd *pd;
};

struct fake_region {
	uintptr_t start, end;
	struct ibv_mr *mr;
	int in_table;	/* findable by get */
	int refs;	/* users (the table's own reference is in_table) */
};

#define NREG 64

struct fake_rcache {
	struct ibv_pd *pd;
	struct fake_region r[NREG];
};

int fakeucs_hits, fakeucs_misses, fakeucs_deregs;

static void release_if_unused(struct fake_region *g)
{
	if (g->mr && !g->in_table && g->refs == 0) {
		ibv_dereg_mr(g->mr);
		fakeucs_deregs++;
		g->mr = NULL;
	}
}

/* The VM_UNMAPPED handler: out of the table now, deregistered later (UCX's GC list). */
static void unmapped(int event, void *data, void *arg)
{
	struct fake_unmapped *ev = data;
	struct fake_rcache *rc = arg;
	uintptr_t s = (uintptr_t)ev->address, e = s + ev->size;

	(void)event;
	for (int i = 0; i < NREG; i++)
		if (rc->r[i].in_table && rc->r[i].start < e && s < rc->r[i].end)
			rc->r[i].in_table = 0;
}

int ucs_rcache_create(const void *params, const char *name, void *stats, void **rcache_p)
{
	const struct fake_rcache_params *p = params;
	struct fake_rcache *rc = calloc(1, sizeof(*rc));

	(void)name;
	(void)stats;
	if (!rc)
		return -4;
	rc->pd = p->pd;
	if (ucm_set_event_handler(FAKE_VM_UNMAPPED, 1000, unmapped, rc)) {
		free(rc);
		return -4;
	}
	*rcache_p = rc;
	return 0;
}

int ucs_rcache_get(void *rcache, void *address, size_t length, int prot, void *arg,
		   void **region_p)
{
	struct fake_rcache *rc = rcache;
	uintptr_t s = (uintptr_t)address & ~4095UL, e = ((uintptr_t)address + length + 4095) & ~4095UL;
	struct fake_region *g = NULL;

	(void)prot;
	(void)arg;
	for (int i = 0; i < NREG; i++) {
		if (rc->r[i].in_table && rc->r[i].start <= s && e <= rc->r[i].end) {
			rc->r[i].refs++;
			fakeucs_hits++;
			*region_p = &rc->r[i];
			return 0;
		}
	}
	for (int i = 0; i < NREG; i++)
		release_if_unused(&rc->r[i]);
	for (int i = 0; i < NREG && !g; i++)
		if (!rc->r[i].mr)
			g = &rc->r[i];
	if (!g)
		return -4;
	g->mr = ibv_reg_mr(rc->pd, (void *)s, e - s, IBV_ACCESS_LOCAL_WRITE |
			   IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	if (!g->mr)
		return -3;
	g->start = s;
	g->end = e;
	g->in_table = 1;
	g->refs = 1;
	fakeucs_misses++;
	*region_p = g;
	return 0;
}

void ucs_rcache_region_put(void *rcache, void *region)
{
	struct fake_region *g = region;

	(void)rcache;
	g->refs--;
	release_if_unused(g);
}

uint32_t fakeucs_region_lkey(void *region)
{
	return ((struct fake_region *)region)->mr->lkey;
}
#endif

#ifdef FAKE_UCP
void ucp_get_version(unsigned *major, unsigned *minor, unsigned *release)
{
	const char *v = getenv("FAKEUCX_VERSION");

	*major = 1;
	*minor = 13;
	*release = 1;
	if (v)
		sscanf(v, "%u.%u.%u", major, minor, release);
}
#endif
