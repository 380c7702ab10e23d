// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fakeucx.c - stand-ins for UCX's libucm.so.0, libucs.so.0 and libucp.so.0 (built from this one
 * file with -DFAKE_UCM, -DFAKE_UCS, -DFAKE_UCP), for host tests of the shim's UCX bridge
 * without UCX or an RDMA device. They model only what the bridge relies on, for the version
 * $FAKEUCX_VERSION names ("1.13.1" when unset):
 * - libucm: ucm_set_event_handler() "installs hooks" unless one of the events was declared
 *   external first; ucm_vm_munmap() runs the UCM_EVENT_VM_UNMAPPED handlers.
 * - libucs: an rcache whose ucs_rcache_get() returns a cached region without calling
 *   ibv_reg_mr (a hit), registers through ibv_reg_mr on a miss, and deregisters dropped
 *   regions later (never inside the handler), as UCX's GC list does. 1.13: the unmap handler
 *   drops regions at once. 1.18 and later: it only queues the range (UCP's rcache has
 *   UCS_RCACHE_FLAG_SYNC_EVENTS), ucs_rcache_get takes an `alignment` argument and applies
 *   the queue before looking up, and ucs_pgtable_lookup() is exported.
 * - libucp: ucp_get_version(); fakeucp_memh_get(), UCP's registration-cache lookup: 1.13 calls
 *   ucs_rcache_get; 1.18 and later inline the hit path as ucp_memh_get does: queue empty?, then
 *   ucs_pgtable_lookup() through the PLT, and ucs_rcache_get only on a miss.
 *   fakeucp_between_hook, when set, runs between the queue check and the lookup (the window
 *   another thread's drain can fall into).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_VM_UNMAPPED (1 << 17)

typedef void (*fake_cb)(int event, void *event_data, void *arg);

/* Minor version of the UCX modelled ($FAKEUCX_VERSION, 1.x). */
__attribute__((unused)) static unsigned fake_minor(void)
{
	const char *v = getenv("FAKEUCX_VERSION");
	unsigned major = 1, minor = 13;

	if (v)
		sscanf(v, "%u.%u", &major, &minor);
	return minor;
}

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
	int sync_events;	/* 1.18+: the unmap handler queues */
	int nq;
	struct { uintptr_t s, e; } q[NREG];	/* queued invalidations */
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
	if (rc->sync_events && rc->nq < NREG) {
		rc->q[rc->nq].s = s;
		rc->q[rc->nq].e = e;
		rc->nq++;
		return;
	}
	for (int i = 0; i < NREG; i++)
		if (rc->r[i].in_table && rc->r[i].start < e && s < rc->r[i].end)
			rc->r[i].in_table = 0;
}

/* ucs_rcache_check_inv_queue: what was queued leaves the table. */
static void apply_queue(struct fake_rcache *rc)
{
	for (int k = 0; k < rc->nq; k++)
		for (int i = 0; i < NREG; i++)
			if (rc->r[i].in_table && rc->r[i].start < rc->q[k].e &&
			    rc->q[k].s < rc->r[i].end)
				rc->r[i].in_table = 0;
	rc->nq = 0;
}

int fakeucs_queue_empty(void *rcache)
{
	return ((struct fake_rcache *)rcache)->nq == 0;
}

/* The page table is the rcache itself here. */
void *fakeucs_pgtable(void *rcache)
{
	return rcache;
}

/* A region containing `address`, or NULL (UCX's returns the pgt region). */
void *ucs_pgtable_lookup(const void *pgtable, uintptr_t address)
{
	const struct fake_rcache *rc = pgtable;

	for (int i = 0; i < NREG; i++)
		if (rc->r[i].in_table && rc->r[i].start <= address && address < rc->r[i].end)
			return (void *)&rc->r[i];
	return NULL;
}

/* ucp_memh_get's hit: a reference on a region the lookup found. */
int fakeucs_hold_if_covers(void *region, void *address, size_t length)
{
	struct fake_region *g = region;

	if ((uintptr_t)address + length > g->end)
		return 0;
	g->refs++;
	fakeucs_hits++;
	return 1;
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
	rc->sync_events = fake_minor() >= 18;
	if (ucm_set_event_handler(FAKE_VM_UNMAPPED, 1000, unmapped, rc)) {
		free(rc);
		return -4;
	}
	*rcache_p = rc;
	return 0;
}

/* 1.13: (rcache, address, length, prot, arg, region_p); 1.17+: alignment before prot. */
int ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3, uintptr_t a4,
		   uintptr_t a5, uintptr_t a6)
{
	struct fake_rcache *rc = rcache;
	uintptr_t s = (uintptr_t)address & ~4095UL, e = ((uintptr_t)address + length + 4095) & ~4095UL;
	void **region_p = (void **)(fake_minor() >= 17 ? a6 : a5);
	struct fake_region *g = NULL;

	(void)a3;
	(void)a4;
	apply_queue(rc);
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
	/* $FAKEUCS_ON_DEMAND=1: an access flag the shim does not cache (it passes it through). */
	g->mr = ibv_reg_mr(rc->pd, (void *)s, e - s, IBV_ACCESS_LOCAL_WRITE |
			   IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
			   (getenv("FAKEUCS_ON_DEMAND") ? IBV_ACCESS_ON_DEMAND : 0));
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
int ucs_rcache_get(void *rcache, void *address, size_t length, uintptr_t a3, uintptr_t a4,
		   uintptr_t a5, uintptr_t a6);
void *ucs_pgtable_lookup(const void *pgtable, uintptr_t address);
int fakeucs_queue_empty(void *rcache);
void *fakeucs_pgtable(void *rcache);
int fakeucs_hold_if_covers(void *region, void *address, size_t length);

void (*fakeucp_between_hook)(void);

/* UCP's registration-cache get (ucp_memh_get), as the modelled version does it. */
int fakeucp_memh_get(void *rcache, void *address, size_t length, void **region_p)
{
	void *r;

	if (fake_minor() < 18)
		return ucs_rcache_get(rcache, address, length, 3, 0, (uintptr_t)region_p, 0);
	if (fakeucs_queue_empty(rcache)) {
		if (fakeucp_between_hook)
			fakeucp_between_hook();
		r = ucs_pgtable_lookup(fakeucs_pgtable(rcache), (uintptr_t)address);
		if (r && fakeucs_hold_if_covers(r, address, length)) {
			*region_p = r;
			return 0;
		}
	}
	return ucs_rcache_get(rcache, address, length, 1, 3, 0, (uintptr_t)region_p);
}

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
