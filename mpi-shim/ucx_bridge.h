/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * ucx_bridge.h - UCX's registration cache kept correct by the shim's monitor (issue 6, UCX
 * bridge; see ucx_bridge.c). Internal to libregcache_shim.so and its tests.
 */
#ifndef REGCACHE_UCX_BRIDGE_H
#define REGCACHE_UCX_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "shim.h"

/* UCM_EVENT_VM_UNMAPPED of <ucm/api/ucm.h> (UCS_BIT(17) in UCX 1.x; checked against the header
 * by tests/ucx_fake_client.c when libucx-dev is installed). The shim builds without UCX. */
#define SHIM_UCM_EVENT_VM_UNMAPPED (1 << 17)

/* The bridge's state, as reported in the shim's summary. */
enum ucx_bridge_state {
	UCX_BRIDGE_UNUSED = 0,	/* the process has created no UCX rcache (yet) */
	UCX_BRIDGE_ACTIVE,	/* UCX told VM_UNMAPPED is external; we forward invalidations */
	UCX_BRIDGE_OFF,		/* not active (REGCACHE_SHIM_UCX=0, no monitor, other UCX) */
};

struct ucx_bridge_counts {
	int state;		/* enum ucx_bridge_state */
	unsigned version[3];	/* UCX major, minor, release (0 when unknown) */
	uint64_t rcaches;	/* ucs_rcache_create calls seen */
	uint64_t gets;		/* ucs_rcache_get calls seen */
	uint64_t syncs;		/* gets before which the monitor had moved and was drained */
	uint64_t forwarded;	/* ucm_vm_munmap calls made */
	uint64_t get_regs;	/* registrations made inside ucs_rcache_get (UCX misses) */
	uint64_t unwatched;	/* of those, watched by no shim cache (one-use, passed through):
				 * reported to UCX as invalidated when its ucs_rcache_get returns */
	/* UCX 1.18-1.22 (UCP's inline lookup): */
	uint64_t ucp_lookups;	/* ucs_pgtable_lookup calls from libucp (UCP cache lookups) */
	uint64_t ucp_refused;	/* of those, answered "not found" after a forward */
	uint64_t ucp_gets;	/* ucs_rcache_get calls from libucp (UCP cache misses) */
	uint64_t uncached_forwarded;	/* ucs_rcache_gets after which unwatched ranges were reported */
};

/* UCX registration-cache hits: gets that registered nothing, plus UCP's inline lookups (1.18+)
 * that did not go on to ucs_rcache_get. */
static inline uint64_t ucx_bridge_hits(const struct ucx_bridge_counts *c)
{
	uint64_t get_hits = c->gets > c->get_regs ? c->gets - c->get_regs : 0;
	uint64_t inline_hits = c->ucp_lookups > c->ucp_gets ? c->ucp_lookups - c->ucp_gets : 0;

	return get_hits + inline_hits;
}

/* The shim's on_invalidate: forwards [addr, addr+len) to ucm_vm_munmap when active. */
void ucx_bridge_invalidated(void *addr, size_t len);
/* Whether the calling thread is inside an interposed ucs_rcache_get. */
int ucx_bridge_in_get(void);
/* A registration of [addr, addr+length) was made inside ucs_rcache_get; `watched`: a shim
 * cache watches it (else UCX is told it is invalid once that ucs_rcache_get returns). */
void ucx_bridge_count_reg(void *addr, size_t length, int watched);
void ucx_bridge_get_counts(struct ucx_bridge_counts *out);

#endif /* REGCACHE_UCX_BRIDGE_H */
