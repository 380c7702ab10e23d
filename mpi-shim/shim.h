/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* shim.h - internals of libregcache_shim.so shared with its unit tests. */
#ifndef REGCACHE_SHIM_H
#define REGCACHE_SHIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>

#include "regcache.h"

/* Counters of the whole process: every PD's cache plus the shim's own. */
struct shim_counts {
	uint64_t hits;
	uint64_t misses;
	uint64_t uncacheable;
	uint64_t reregistrations;
	uint64_t invalidated;
	uint64_t evictions;
	uint64_t registrations;
	uint64_t deregistrations;
	uint64_t wrapped;	/* registrations the program got through the cache */
	uint64_t passthrough;	/* registrations handed to rdma-core unchanged */
	int enabled;
};

void shim_counts_add(struct shim_counts *t, const struct regcache_stats *s);

/* What the program holds: `mr` first, so a struct ibv_mr * is a struct shim_mr *. */
struct shim_mr {
	struct ibv_mr mr;
	struct regcache_mr *handle;	/* cached registration, or NULL ... */
	struct ibv_mr *real;		/* ... a pass-through one (after ibv_rereg_mr) */
};

/* The wrappers, in a range the shim reserves (shim_pool.c). */
struct shim_mr *shim_pool_get(void);		/* zeroed and live, or NULL (no memory) */
int shim_pool_claim(const void *p);	/* -1: not a wrapper; 0: not live; 1: claimed */
int shim_pool_state(const void *p);	/* -1: not a wrapper; 0: not live; 1: live */
void shim_pool_unclaim(struct shim_mr *w);	/* claimed -> live again */
void shim_pool_put(struct shim_mr *w);		/* claimed -> free */
size_t shim_pool_live(void);
size_t shim_pool_carved(void);	/* slots ever handed out (tests) */

/* Provided by shim.c for the bridges (ucx_bridge.c, ofi_attach.c). */
/* One line on stderr, "regcache_shim: ...". */
void shim_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* regcache_sync() on every protection domain's cache; returns how many drained. */
int shim_sync_all(void);
/* Whether the shim caches registrations here (enabled, libibverbs found, a monitor works). */
int shim_can_cache(void);
/* REGCACHE_SHIM_VERBOSE. */
int shim_is_verbose(void);
/* A yes/no variable: unset or empty is `dflt`; 0, no, n, off (any case) are no. */
int shim_env_flag(const char *name, int dflt);
/* The next definition of a libibverbs function: `version` first, then any; also from a
 * libibverbs loaded privately by a dlopen()ed library. NULL when not loaded. */
void *shim_next_sym(const char *name, const char *version);

/* Exported by the shim for tests: the process's counters. Returns 0. */
int regcache_shim_counts(struct shim_counts *out);

#endif /* REGCACHE_SHIM_H */
